"""``trajlab fit|validate|test|predict``: Lightning's own CLI (jsonargparse) over `LitLM` + `LMDataModule`, with
``--run_dir`` (one folder for logs, checkpoints, HF export and trajectory) and the shipped recipes, by path or by
name (``--config pretrain_tiny``)."""

from __future__ import annotations

import os
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # package data; the repository's configs/ links here


def recipe_path(name: str | os.PathLike) -> Path:
    """A training recipe by path (``configs/debug.yaml``) or by name (``debug``, ``pretrain_tiny.yaml``).

    Raises:
        FileNotFoundError: neither a file nor a shipped recipe, naming the shipped ones.
    """
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise FileNotFoundError(f"no recipe {str(name)!r}: pass a YAML file or one of the shipped recipes: {names}")



def _check_writable(path: str | Path) -> None:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".trajlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"output directory {path} is not writable ({e.strerror}): choose another "
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


def recipes_resolved(argv: list[str]) -> list[str]:
    """``--config NAME`` -> the shipped recipe's path when NAME is no file (``--config pretrain_tiny``)."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--config" and i + 1 < len(out):
            out[i + 1] = str(recipe_path(out[i + 1]))
        elif token.startswith("--config="):
            out[i] = "--config=" + str(recipe_path(token.partition("=")[2]))
    return out
