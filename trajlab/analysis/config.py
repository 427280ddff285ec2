"""Every analysis option with its default, in one place; analyze() writes the values used to summary.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The paper's comparisons on Pythia (143,000 steps, 1,430 warm-up steps): consecutive checkpoints 1000
# steps apart at 10k, 50k and 100k. As fractions of max_steps: lag 0.70%, targets ~7%, 35%, 70%.
PAPER_MAX_STEPS = 143_000
PAPER_LAG_FRACTION = 1000 / PAPER_MAX_STEPS
PAPER_TARGET_FRACTIONS = (10_000 / PAPER_MAX_STEPS, 50_000 / PAPER_MAX_STEPS, 100_000 / PAPER_MAX_STEPS)


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of trajlab.analysis.analyze (and `trajlab analyze` / `trajlab report`)."""

    n_bytes_units: bool = True
    """KL in bits per byte (True) or nats per text (False)."""
    clip_quantile: float | None = None
    """Clip LL from below at this pooled quantile (paper: 0.02); None: no clipping."""
    drop_jump_fraction: float | None = None
    """Drop this fraction of texts with the largest consecutive-snapshot jumps (paper: 0.03); None: none."""
    jumps_after_warmup: bool = True
    """Rank jumps over each run's snapshots at steps >= its warmup_steps only (the paper's choice)."""
    assumed_warmup_fraction: float = 0.01
    """Warm-up assumed for stores that do not record warmup_steps, as a fraction of max_steps (Pythia: 1%)."""
    window: int = 10
    """Snapshots after each start point in a diffusion fit (paper: 10)."""
    fits_after_warmup: bool = True
    """Diffusion fits start at steps >= warmup_steps only."""
    full_windows: bool = True
    """Keep only diffusion fits whose window holds `window` usable lags (no truncated fits at the end)."""
    lag_fraction: float = PAPER_LAG_FRACTION
    """Consecutive-pair lag: the smallest recorded spacing >= lag_fraction * max_steps (steps rounded)."""
    target_fractions: tuple[float, ...] = PAPER_TARGET_FRACTIONS
    """Consecutive pairs start at the first snapshot at or after each target * max_steps (steps rounded)."""
    at_steps: tuple[int, ...] | None = None
    """Explicit start steps of the consecutive pairs (next snapshot as partner); overrides the lag rule."""
    tsne: bool = True
    """Also draw t-SNE maps (per run and joint) and test their spirals."""
    tsne_perplexity: float | None = None
    """t-SNE perplexity; None: min(30, (K - 1) / 3) for K points."""
    spiral_n_null: int = 200
    """Random walks in the spiral null of a PCA map."""
    spiral_n_null_tsne: int = 40
    """Random walks in the spiral null of a t-SNE map (each one is a t-SNE run; smallest p 1/41)."""
    thread_n_null: int = 500
    """Layer permutations in the thread null (all of them when (L+1)! <= this)."""
    n_boot: int = 1000
    """Bootstrap resamples (texts for KL intervals and orderings, start points for exponents)."""
    level: float = 0.95
    """Confidence level of every interval."""
    n_random: int = 1000
    """At most this many random pairs (different roots) in the fine-tuned vs base table."""
    max_nats_per_token: float = 1.0
    """Pairs above this KL per scored token are flagged as beyond the estimator's checked range (kl.py)."""
    seed: int = 0
    """Seed of every null, bootstrap and random-pair draw."""

    def __post_init__(self) -> None:
        counts = {
            "window": (self.window, 3),
            "n_boot": (self.n_boot, 1),
            "spiral_n_null": (self.spiral_n_null, 1),
            "spiral_n_null_tsne": (self.spiral_n_null_tsne, 1),
            "thread_n_null": (self.thread_n_null, 1),
            "n_random": (self.n_random, 1),
        }
        for name, (value, least) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"analysis option {name} must be an integer >= {least}, got {value!r}")
        if not 0 <= self.assumed_warmup_fraction < 1:
            raise ValueError(
                f"assumed_warmup_fraction must be in [0, 1), got {self.assumed_warmup_fraction!r}"
            )
        if not 0 < self.level < 1:
            raise ValueError(f"analysis option level must be in (0, 1), got {self.level!r}")
        if not 0 < self.lag_fraction < 1 or not all(0 <= f <= 1 for f in self.target_fractions):
            raise ValueError(
                f"lag_fraction must be in (0, 1) and target_fractions in [0, 1], got {self.lag_fraction!r}, "
                f"{self.target_fractions!r}"
            )

    def replace(self, **options) -> AnalysisConfig:
        """Returns a copy with options changed; refuses unknown names with the list of known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        if unknown := sorted(set(options) - known):
            raise ValueError(f"unknown analysis option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **options)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def tsne_perplexity(k: int, perplexity: float | None = None) -> float:
    """Returns the t-SNE perplexity used for k points: the given one, or min(30, (k - 1) / 3)."""
    return min(30.0, (k - 1) / 3.0) if perplexity is None else float(perplexity)
