"""The ``trajlab`` command.

``trajlab fit|validate --config configs/X.yaml`` is Lightning's own CLI over ``LitLM`` + ``LMDataModule``; the
other subcommands (``import``, ``merge``, ``analyze``, ``report``, ``demo``) are plain argparse programs owned by
the modules that implement them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
# name -> (module, function): each function takes argv (list[str]) and returns an exit code.
TOOL_SUBCOMMANDS = {
    "import": ("trajlab.importers", "import_main"),
    "merge": ("trajlab.importers", "merge_main"),
    "analyze": ("trajlab.report", "analyze_main"),
    "report": ("trajlab.report", "report_main"),
    "demo": ("trajlab.demo", "main"),
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

    from trajlab.lit import LitLM, LMDataModule

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


# A user's mistake (a missing path, an unknown preset, a bad revision, a corrupt or mismatched file) surfaces as
# one of these; the CLI prints its message as one line. TRAJLAB_DEBUG=1 shows the traceback instead.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, KeyError)


def _one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and type(e).__str__ is KeyError.__str__ and e.args else str(e)
    return " ".join(msg.split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user mistake prints ``error: ...`` (one line) and returns 2."""
    if os.environ.get("TRAJLAB_DEBUG", "") not in ("", "0"):
        return _dispatch(argv)
    try:
        return _dispatch(argv)
    except USER_ERRORS as e:
        print(f"error: {_one_line(e)} (TRAJLAB_DEBUG=1 shows the traceback)", file=sys.stderr)
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
    lightning_cli(None if from_command_line else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
