"""The ``trajlab`` command.

``trajlab fit|validate --config X`` (a shipped recipe's name or a YAML path) is Lightning's own CLI over ``LitLM`` + ``LMDataModule``; the
other subcommands (``import``, ``merge``, ``analyze``, ``report``, ``demo``) are owned by the modules that
implement them. ``import``, ``merge``, ``analyze`` and ``report`` parse with jsonargparse (`tool_parser`,
`parse_tool_args` here) from their option dataclasses, so ``--config FILE`` and ``--print_config`` work for
them as for ``fit``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trajlab._args import USER_ERRORS, one_line
from trajlab._io import recipe_path

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
# name -> (module, function): each function takes argv (list[str]) and returns an exit code.
TOOL_SUBCOMMANDS = {
    "import": ("trajlab.hub.importer", "import_main"),
    "merge": ("trajlab.store.merge", "merge_main"),
    "analyze": ("trajlab.report.commands", "analyze_main"),
    "report": ("trajlab.report.commands", "report_main"),
    "demo": ("trajlab.report.demo", "main"),
}


def _check_writable(path: str | Path) -> None:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".trajlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: output directory {path} is not writable ({e.strerror}): choose another "
                         "trainer.default_root_dir") from None


def _apply_run_dir(cfg, run_dir: str) -> None:
    """Point every path of a parsed fit config at ``run_dir``."""
    cfg.trainer.default_root_dir = run_dir
    loggers = cfg.trainer.logger if isinstance(cfg.trainer.logger, list) else [cfg.trainer.logger]
    for lg in loggers:
        if hasattr(lg, "init_args") and "save_dir" in lg.init_args:
            lg.init_args.save_dir = run_dir
    for cb in cfg.trainer.callbacks or []:
        if cb.class_path.endswith("ModelCheckpoint"):
            cb.init_args.dirpath = str(Path(run_dir) / "checkpoints")


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build (and by default run) the LightningCLI; returns the ``LightningCLI`` object."""
    from lightning.pytorch.cli import LightningCLI

    from trajlab.train.lit import LitLM, LMDataModule

    class TrajlabCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--run_dir", type=str | None, default=None,
                help="one folder for the run: sets trainer.default_root_dir, the loggers' save_dir and the "
                "checkpoint folder (<run_dir>/checkpoints); the HF export goes to <run_dir>/hf",
            )
            # Fine-tuning reads the tokenizer saved beside the model it starts from.
            parser.link_arguments("model.init_from", "data.tokenizer")

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            if cfg.get("run_dir"):
                _apply_run_dir(cfg, cfg.run_dir)

        def before_fit(self) -> None:
            _check_writable(self.trainer.default_root_dir)

    return TrajlabCLI(
        LitLM,
        LMDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user mistake prints ``error: ...`` (one line) and returns 2."""
    if os.environ.get("TRAJLAB_DEBUG", "") not in ("", "0"):
        return _dispatch(argv)
    try:
        return _dispatch(argv)
    except USER_ERRORS as e:
        print(f"error: {one_line(e)} (TRAJLAB_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def _dispatch(argv: list[str] | None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if argv and argv[0] in TOOL_SUBCOMMANDS:
        import importlib

        module, fn = TOOL_SUBCOMMANDS[argv[0]]
        return int(getattr(importlib.import_module(module), fn)(argv[1:]) or 0)
    if argv and argv[0] not in LIGHTNING_SUBCOMMANDS and not argv[0].startswith("-"):
        known = ", ".join((*LIGHTNING_SUBCOMMANDS, *TOOL_SUBCOMMANDS))
        print(f"error: unknown subcommand {argv[0]!r}: choose one of {known}", file=sys.stderr)
        return 2
    argv = _recipes_resolved(argv)
    if from_command_line:
        sys.argv[1:] = argv
    lightning_cli(None if from_command_line else argv)
    return 0


def _recipes_resolved(argv: list[str]) -> list[str]:
    """``--config NAME`` -> the shipped recipe's path when NAME is no file (``--config pretrain_tiny``)."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--config" and i + 1 < len(out):
            out[i + 1] = str(recipe_path(out[i + 1]))
        elif token.startswith("--config="):
            out[i] = "--config=" + str(recipe_path(token.partition("=")[2]))
    return out


if __name__ == "__main__":
    sys.exit(main())
