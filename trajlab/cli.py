"""The ``trajlab`` command.

``trajlab fit|validate --config X`` (a shipped recipe's name or a YAML path) is Lightning's own CLI
(`trajlab.train.fit`); ``import``, ``merge``, ``analyze``, ``report`` and ``demo`` are owned by the modules that
implement them, and parse with jsonargparse from their option dataclasses (`trajlab._args`), so ``--config FILE``
and ``--print_config`` work for them as for ``fit``.
"""

from __future__ import annotations

import os
import sys

from trajlab._args import USER_ERRORS, one_line
from trajlab.train.fit import lightning_cli, recipes_resolved

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
# name -> (module, function): each function takes argv (list[str]) and returns an exit code.
TOOL_SUBCOMMANDS = {
    "import": ("trajlab.hub.importer", "import_main"),
    "quantize": ("trajlab.hub.quantize", "quantize_main"),
    "probe": ("trajlab.data.probe_build", "probe_main"),
    "merge": ("trajlab.store.merge", "merge_main"),
    "analyze": ("trajlab.report.commands", "analyze_main"),
    "report": ("trajlab.report.commands", "report_main"),
    "demo": ("trajlab.report.demo", "main"),
}


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
    argv = recipes_resolved(argv)
    if from_command_line:
        sys.argv[1:] = argv
    lightning_cli(None if from_command_line else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
