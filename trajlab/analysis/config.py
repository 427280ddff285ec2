"""Every analysis option with its default, in one place; analyze() writes the values used to summary.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trajlab._options import replace_options

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
    clip_quantile: float | None = 0.02
    """Clip pretraining LL from below at this quantile over all vectors of all runs of the comparison (the
    paper's code: 0.02); None: no clipping. Fine-tunes, quantized copies and layer rows are never clipped."""
    jump_drop: float | None = 0.03
    """Drop this fraction of texts with the largest |delta l| over all post-warm-up consecutive pairs of the
    comparison's pretraining runs, after clipping, and recompute B on the rest (the paper's code: 0.03); None:
    keep every text. `drop_jump_fraction` is accepted as its older name."""
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
    tsne_min_snapshots: int = 10
    """t-SNE maps (and their spiral tests) only for stores with at least this many snapshots: with fewer points
    the perplexity must be tiny and the map says nothing about neighbourhoods."""
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
    exclude_flagged: bool = True
    """Leave flagged pairs (above max_nats_per_token) out of every ordering, with the count left out."""
    warmup_step: int | None = None
    """Take warm-up as ending at this step for every store (kishino2025: 2000); None: each store's own."""
    fits_min_step: int | None = None
    """Diffusion fits start at every snapshot >= this step (kishino2025: 1000), instead of after warm-up."""
    scale_intervals: int | None = None
    """Early / Later consecutive intervals per run on the KL scale (the paper: 50); None: min(50, half)."""
    exclude: tuple[str, ...] = ()
    """Stores ("run") or snapshots ("run@step") left out of the analysis, each named in the notes."""
    preset_name: str | None = None
    """The preset these options came from (AnalysisConfig.preset), or None."""
    seed: int = 0
    """Seed of every null, bootstrap and random-pair draw."""

    def __post_init__(self) -> None:
        counts = {
            "window": (self.window, 3),
            "n_boot": (self.n_boot, 1),
            "spiral_n_null": (self.spiral_n_null, 1),
            "spiral_n_null_tsne": (self.spiral_n_null_tsne, 1),
            "thread_n_null": (self.thread_n_null, 1),
            "tsne_min_snapshots": (self.tsne_min_snapshots, 3),
            "n_random": (self.n_random, 1),
        }
        for name, (value, least) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"analysis option {name} must be an integer >= {least}, got {value!r}")
        if not 0 <= self.assumed_warmup_fraction < 1:
            raise ValueError(
                f"assumed_warmup_fraction must be in [0, 1), got {self.assumed_warmup_fraction!r}"
            )
        for name in ("clip_quantile", "jump_drop"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1:
                raise ValueError(f"analysis option {name} must be in [0, 1) or None, got {v!r}")
        for name, least in (("warmup_step", 0), ("fits_min_step", 0), ("scale_intervals", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
                raise ValueError(f"analysis option {name} must be an integer >= {least} or None, got {v!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"analysis option level must be in (0, 1), got {self.level!r}")
        if not 0 < self.lag_fraction < 1 or not all(0 <= f <= 1 for f in self.target_fractions):
            raise ValueError(
                f"lag_fraction must be in (0, 1) and target_fractions in [0, 1], got {self.lag_fraction!r}, "
                f"{self.target_fractions!r}"
            )

    @property
    def drop_jump_fraction(self) -> float | None:
        """The older name of jump_drop."""
        return self.jump_drop

    @classmethod
    def preset(cls, name: str, **options) -> AnalysisConfig:
        """Returns the options of a named convention set, with options changed on top.

        "kishino2025": the authors' released code (shimo-lab/modelmap, kl-scale/) where it differs from the
        paper's text or from trajlab's defaults; each field is listed in docs/analysis.md with the code it
        follows.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown analysis preset {name!r}; known: {sorted(PRESETS)}")
        return cls().replace(**PRESETS[name], preset_name=name).replace(**options)

    def replace(self, **options) -> AnalysisConfig:
        """Returns a copy with options changed; refuses unknown names with the list of known ones."""
        if "drop_jump_fraction" in options:
            options["jump_drop"] = options.pop("drop_jump_fraction")
        if "exclude" in options and options["exclude"] is not None:
            options["exclude"] = tuple(str(x) for x in options["exclude"])
        return replace_options(self, **options)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The authors' code (kl-scale/), where it differs from the paper's text: warm-up taken as step 2000, the first
# and last 50 thousand-step intervals as Early / Later, fits from every checkpoint >= 1000, and the checkpoints
# they exclude as anomalous (1b@116000; the runs 410m-seed3 and 410m-seed4).
PRESETS: dict[str, dict] = {
    "kishino2025": {
        "clip_quantile": 0.02,
        "jump_drop": 0.03,
        "jumps_after_warmup": True,
        "warmup_step": 2000,
        "fits_after_warmup": False,
        "fits_min_step": 1000,
        "full_windows": True,
        "window": 10,
        "scale_intervals": 50,
        "exclude": ("pythia-1b@116000", "pythia-410m-seed3", "pythia-410m-seed4"),
    }
}


def tsne_perplexity(k: int, perplexity: float | None = None) -> float:
    """Returns the t-SNE perplexity used for k points: the given one, or min(30, (k - 1) / 3)."""
    return min(30.0, (k - 1) / 3.0) if perplexity is None else float(perplexity)
