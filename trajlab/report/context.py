"""State shared while one page is built: figure numbering, section ids, flag counts, skipped t-SNE maps."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from trajlab.report.html import Markup
from trajlab.report.plots import Plots


@dataclass
class PageContext:
    """What the sections of one page share while it is written."""

    curves: dict[str, dict] = field(default_factory=dict)
    """Run name -> training curves {"train_loss": [(step, loss)], "val_loss": [...]} for hover texts."""
    plots: Plots = field(default_factory=Plots)
    ids: set[str] = field(default_factory=set)
    """Every section id on the page."""
    aliases: list[dict[str, str]] = field(default_factory=list)
    """Per probe group: the id a finding names -> its id on the page (repeats across groups get a suffix)."""
    n_flagged: int = 0
    """KL values shown with the beyond-range flag."""
    tsne_skipped: list[tuple[str, int]] = field(default_factory=list)
    """(run, snapshots) of trajectories too short for a t-SNE map."""
    folder: Path = Path(".")
    """The current group's analysis folder (its PNGs)."""
    placed: set[str] = field(default_factory=set)
    """Figure files of the current group shown or linked so far."""

    def start_group(self, folder: Path) -> None:
        self.aliases.append({})
        self.folder = folder
        self.placed = set()

    def new_id(self, base: str) -> str:
        unique, n = base, 1
        while unique in self.ids:
            n += 1
            unique = f"{base}-{n}"
        self.ids.add(unique)
        if self.aliases:
            self.aliases[-1][base] = unique
        return unique

    def section(self, base: str, title: str, body: str, level: int = 3) -> Markup:
        """Returns <section id=...> with a heading; the id is registered for the verdict table's links."""
        sid = self.new_id(base)
        return Markup(
            f'<section id="{html.escape(sid)}"><h{level}>{html.escape(title)}</h{level}>{body}</section>'
        )

    def flag(self, on: bool | None) -> bool | None:
        if on:
            self.n_flagged += 1
        return on

    def rel(self, figure: str) -> str:
        """The figure's path relative to the page, marked as placed."""
        self.placed.add(figure)
        return f"{self.folder.name}/{figure}"
