"""How the probe texts are scored: `ScoringConfig`, the one carrier of the scoring options.

`trajlab.lens.score_model` takes one (or the same names as keywords), `TrajectoryCallback` takes one
(``scoring=``), `ImportConfig` holds one (``--scoring.long_texts`` on the command line), and the store records the
resolved values as its ``scoring`` block (`ScoringConfig.record`, the keys of `trajlab.store.meta.SCORING_SCHEMA`).
Each field is checked once, here; what needs the model (the window against its context) is checked by
score_model. Standard library only, so the store and the CLI parsers read it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from trajlab._options import replace_options

LongTexts = Literal["rolling", "truncate", "error"]
LensDtype = Literal["float32", "bfloat16", "auto"]
LONG_TEXTS: tuple[str, ...] = get_args(LongTexts)
LENS_DTYPES: tuple[str, ...] = get_args(LensDtype)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class ScoringConfig:
    """Options of `trajlab.lens.score_model`: which tokens of a text are scored, in which window and dtype."""

    long_texts: LongTexts = "rolling"
    """A text longer than the window C: "rolling" scores it whole in sliding windows (each token once, with at
    least C - S tokens of context), "truncate" scores its first C tokens (warns), "error" refuses it."""
    stride: int | None = None
    """The rolling stride S in tokens, 1..C - 1 (None: C // 2); only with long_texts="rolling"."""
    max_length: int | None = None
    """The window C in tokens, 2..the model's context (None: the model's context)."""
    lens_dtype: LensDtype | None = None
    """Dtype of the lens's unembedding GEMMs: None (the model's own), "float32", "bfloat16", "auto" (bf16 where
    the device multiplies bf16 natively, else fp32)."""
    prefix_bos: bool = False
    """Prepend the tokenizer's BOS so the first text token is scored too (not the papers' convention)."""
    batch_size: int = 8
    """Windows (a text that fits is one) per forward pass."""

    def __post_init__(self) -> None:
        if self.long_texts not in LONG_TEXTS:
            raise ValueError(
                f"long_texts must be one of {', '.join(map(repr, LONG_TEXTS))}, got {self.long_texts!r}"
            )
        if self.stride is not None:
            if not _is_int(self.stride):
                raise ValueError(f"stride must be an int (tokens between window starts), got {self.stride!r}")
            if self.long_texts != "rolling":
                raise ValueError(
                    f"stride={self.stride} applies only to long_texts='rolling', not {self.long_texts!r}; drop it"
                )
            if self.stride < 1:
                raise ValueError(f"stride must be >= 1 token, got {self.stride}")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 2):
            raise ValueError(f"max_length must be an int >= 2 (tokens), got {self.max_length!r}")
        if self.lens_dtype is not None and self.lens_dtype not in LENS_DTYPES:
            raise ValueError(
                f"lens_dtype must be None or one of {', '.join(map(repr, LENS_DTYPES))}, got {self.lens_dtype!r}"
            )
        if not isinstance(self.prefix_bos, bool):
            raise ValueError(f"prefix_bos must be True or False, got {self.prefix_bos!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")

    def replace(self, **options) -> ScoringConfig:
        """A copy with some options changed (`trajlab._options.replace_options`)."""
        return replace_options(self, **options)

    def window(self, context: int | None) -> int | None:
        """The window C: max_length (at most the model's `context`) when given, else `context`."""
        if self.max_length is None:
            return context
        if context is not None and self.max_length > context:
            raise ValueError(
                f"max_length must be in 2..{context} (the model's context), got {self.max_length}"
            )
        return self.max_length

    def stride_in(self, window: int | None) -> int | None:
        """The stride S used in `window` (None where nothing rolls), checked against it: 1 <= S <= C - 1."""
        if self.long_texts != "rolling" or window is None:
            return self.stride if self.long_texts == "rolling" else None
        s = window // 2 if self.stride is None else self.stride
        if not 1 <= s <= window - 1:
            raise ValueError(f"stride must be in 1..{window - 1} (the window {window} minus 1), got {s}")
        return s

    def record(self, *, window: int | None, n_tokens, lens_dtype: str) -> dict:
        """The store's ``scoring`` block of rows scored with these options: the resolved window, stride and lens
        dtype, and the scored tokens per text."""
        return {"long_texts": self.long_texts, "stride": self.stride_in(window), "window": window,
                "n_tokens": [int(n) for n in n_tokens], "lens_dtype": lens_dtype}
