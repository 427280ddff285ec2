"""``trajlab analyze`` and ``trajlab report``: the command lines over `trajlab.analysis.analyze` and
`trajlab.report.page.write_report`.

Both take every `AnalysisConfig` field as a flag (``--n_boot 200``, ``--tsne false``) or from
``--config FILE`` (YAML, as ``--print_config`` writes it); the defaults are the dataclasses'. The flags of
earlier releases still work: ``--nats``, ``--no-tsne``, ``--spiral-nulls``, ``--spiral-nulls-tsne``,
``--thread-nulls``, dashes for underscores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from trajlab.analysis.config import AnalysisConfig
from trajlab.report.page import write_report
from trajlab.store import open_stores

# flags of earlier releases -> the AnalysisConfig field (or "--field=value" for a flag that takes no value)
ANALYSIS_ALIASES = {
    "--nats": "--n_bytes_units=false",
    "--spiral_nulls": "--spiral_n_null",
    "--spiral_nulls_tsne": "--spiral_n_null_tsne",
    "--thread_nulls": "--thread_n_null",
}
_EPILOG = (
    "Flags may use dashes or underscores; a bool flag alone means true, --no-FLAG false; --nats: KL in nats."
)


@dataclass
class ReportConfig:
    """Options of `trajlab report`: where the page goes and the analysis behind it."""

    out: str
    """Output folder: report.html, summary.json and one analysis folder per probe set."""
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    """The analysis of each probe group (its fields are flags of their own: --n_boot, --window, ...)."""

    def write(self, paths: list[str | Path]) -> Path:
        """Writes the report of the runs / stores under `paths`; returns the page."""
        return write_report(paths, self.out, config=self.analysis)


# command -> (positional, its help, description)
_COMMANDS = {
    "analyze": (
        "stores", "trajectory store folders sharing one probe set", "summary.json, CSV tables, PNG figures"
    ),
    "report": (
        "paths", "run folders, store folders, or a folder of runs (runs/demo)",
        "one self-contained report.html",
    ),
}


def command_parser(command: str, preset: str | None = None):
    """The jsonargparse parser of `trajlab analyze` or `trajlab report`: the paths, ``--out`` and every
    AnalysisConfig field (defaults: the dataclasses', or the named preset's), with ``--config FILE``,
    ``--print_config`` and ``--preset NAME``."""
    from trajlab._args import tool_parser

    positional, what, description = _COMMANDS[command]
    p = tool_parser(f"trajlab {command}", description, _EPILOG)
    p.add_argument(positional, type=str, nargs="+", help=what)
    if command == "report":
        p.add_class_arguments(ReportConfig, nested_key=None, skip={"analysis"}, as_group=False)
    else:
        p.add_argument("--out", type=str, required=True, help="output folder")
    p.add_class_arguments(AnalysisConfig, nested_key=None, as_group=False)
    p.add_argument("--preset", type=str, default=None, help="named analysis conventions, e.g. kishino2025 "
                   "(the authors' code; docs/analysis.md); other flags change it further")
    if preset is not None:
        p.set_defaults(dataclasses.asdict(AnalysisConfig.preset(preset)))
    return p


def _parse(command: str, argv: list[str]):
    from trajlab._args import parse_tool_args

    preset = None
    for i, arg in enumerate(argv):  # the preset sets the defaults the other flags change
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    return parse_tool_args(command_parser(command, preset), argv, ANALYSIS_ALIASES)


def _analysis_config(ns) -> AnalysisConfig:
    values = {f.name: ns[f.name] for f in dataclasses.fields(AnalysisConfig)}
    for name in ("target_fractions", "at_steps", "exclude"):  # YAML lists -> the dataclass's tuples
        values[name] = None if values[name] is None else tuple(values[name])
    return AnalysisConfig(**values)


def analyze_main(argv: list[str]) -> int:
    from trajlab import analysis as ta

    ns = _parse("analyze", argv)
    config = _analysis_config(ns)  # a bad option is refused before any store is read
    summary = ta.analyze(open_stores(ns.stores), ns.out, config=config)
    print(f"wrote {Path(ns.out) / 'summary.json'} with {len(summary['figures'])} figures, "
          f"{len(summary['tables'])} tables")
    return 0


def report_main(argv: list[str]) -> int:
    ns = _parse("report", argv)
    page = ReportConfig(ns.out, _analysis_config(ns)).write(ns.paths)
    print(f"report: {page.resolve()}")
    return 0

