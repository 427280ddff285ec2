"""The ``trajlab`` command: one table of subcommands, and the one place a user's mistake is printed.

``trajlab fit|validate|test|predict --config X`` (a shipped recipe's name or a YAML path) is Lightning's own CLI
(`trajlab.train.fit`); the other subcommands are owned by the modules that implement them and parse with
jsonargparse from their option dataclasses (`trajlab._args`), so ``--config FILE`` and ``--print_config`` work
for them as for ``fit``. ``trajlab --help`` lists them all; ``trajlab SUBCOMMAND --help`` gives one's options.
"""

from __future__ import annotations

import importlib
import os
import sys

from trajlab._args import USER_ERRORS, one_line

LIGHTNING = "lightning"  # the entry of Lightning's own subcommands: trajlab.train.fit.lightning_cli
# name -> ("module:function" taking argv (list[str]) and returning an exit code, or LIGHTNING; one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (LIGHTNING, "train or fine-tune with the trajectory callback (Lightning's CLI; --config RECIPE)"),
    "validate": (LIGHTNING, "Lightning's validation loop over a model and data module"),
    "test": (LIGHTNING, "Lightning's test loop"),
    "predict": (LIGHTNING, "Lightning's predict loop"),
    "import": ("trajlab.hub.importer:import_main",
               "score public checkpoints (Pythia revisions, any HF causal LM, GGUF) into a store"),
    "quantize": ("trajlab.hub.quantize:quantize_main",
                 "quantize a model as llama.cpp does (GGUF types) and score it into a store beside its parent"),
    "probe": ("trajlab.data.probe_build:probe_main",
              "`probe build`: a probe set from a datasets corpus with the papers' recipe"),
    "merge": ("trajlab.store.merge:merge_main", "merge stores of one model (e.g. shards) into one"),
    "analyze": ("trajlab.report.commands:analyze_main", "summary.json, CSV tables and PNG figures of stores"),
    "report": ("trajlab.report.commands:report_main", "one self-contained report.html of runs or stores"),
    "demo": ("trajlab.report.demo:main", "the main job: pretrain, fine-tune, quantize, import, analyse, report"),
}


def overview() -> str:
    """``trajlab --help``: every subcommand with its line from `COMMANDS`."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"usage: trajlab SUBCOMMAND [options]   (trajlab SUBCOMMAND --help: its options)\n\n"
            f"Language-model trajectories in log-likelihood space.\n\nsubcommands:\n{rows}\n\n"
            "A mistake prints one line `error: ...` and exits 2; TRAJLAB_DEBUG=1 shows the traceback.")


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
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0
    if argv[0] not in COMMANDS and not argv[0].startswith("-"):  # leading options go to Lightning's CLI
        raise ValueError(f"unknown subcommand {argv[0]!r}: choose one of {', '.join(COMMANDS)} (trajlab --help)")
    entry = COMMANDS[argv[0]][0] if argv[0] in COMMANDS else LIGHTNING
    if entry != LIGHTNING:
        module, fn = entry.split(":")
        return int(getattr(importlib.import_module(module), fn)(argv[1:]) or 0)
    from trajlab.train.fit import lightning_cli, recipes_resolved

    argv = recipes_resolved(argv)
    if from_command_line:
        sys.argv[1:] = argv
    lightning_cli(None if from_command_line else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
