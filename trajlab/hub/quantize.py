"""GGUF quantization of a model, scored into a store: `quantize_model` (``trajlab quantize``).

Every weight matrix is quantized and dequantized with the `gguf` package's own quantizers (the code llama.cpp's
converter uses: ``gguf.quants.quantize`` / ``dequantize``), and the dequantized float32 model is scored on the
parent's probe at every lens row into a new store with one snapshot. Which tensors get which type follows
llama.cpp's ``llama-quantize`` (src/llama-quant.cpp), rule "default" (its default mix) or "pure" (``--pure``):

* quantized: parameters of >= 2 dims whose name ends in "weight" (Linear, GPT-2's Conv1D read transposed, as
  the GGUF converter stores them, the token embedding);
* kept in float32: 1-D tensors (norm weights, all biases) and position embeddings (llama.cpp skips
  ``pos_embd``), any other embedding but the token one;
* the output matrix (the unembedding, or the token embedding when the two are tied): "default" gives it Q8_0
  whatever the format (llama.cpp: Q8_0 for Q8_0; Q6_K for the Q4/Q5 formats when its rows are a multiple of
  256, else Q8_0; the gguf package cannot quantize Q6_K, so Q8_0 stands in); "pure" gives it the format.

Rows are the contiguous (input) dimension, tiled in blocks of 32 values. A matrix whose rows are no multiple of
32 is refused (llama.cpp would fall back to another type), as is a bad format or a missing parent step: in one
line, before anything is written.

`exact_sequence_kl` computes what the store's KL estimate approximates, from full next-token distributions.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from trajlab._options import replace_options
from trajlab.scoring_config import ScoringConfig

if TYPE_CHECKING:
    import torch

    from trajlab.data.probe import ProbeSet

FORMATS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
RULES = ("default", "pure")
BLOCK = 32  # values per block in every format above
KEPT = "f32"  # the type of a tensor left in full precision
_CHECK_TEXTS = 4  # texts on which the unquantized source is compared with the parent snapshot
_CHECK_NATS = 0.01  # largest |LL difference| (nats per text) between the source and its parent snapshot


@dataclass
class QuantizeConfig:
    """Options of `quantize_model` beyond the model, the format, the store, the parent and the probe."""

    rule: Literal["default", "pure"] = "default"
    """ "default": llama-quantize's default mix (the output matrix in Q8_0); "pure": every matrix in the format."""
    layers: Literal["all", "last"] = "all"
    """ "all" (logit lens at every layer) or "last"."""
    step: int | None = None
    """The snapshot's step; None: the parent snapshot's step, else 0."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """How the probe is scored (--scoring.long_texts, --scoring.batch_size, ...; the flags without "scoring."
    work too). With a parent, its recorded long_texts, stride, window and lens dtype are used (a different
    value given here is refused: the KL to the parent needs the same scoring)."""
    revision: str = "main"
    """The hub revision, for a hub model."""
    gguf_file: str | None = None
    """The .gguf file inside a folder or hub repo that holds several."""
    cache_dir: str | None = None
    """The HF cache (default $HF_HUB_CACHE)."""
    device: str | None = None
    """Torch device to score on; None: the CPU."""
    run: str | None = None
    """The store's run name (default the parent's run, or the model's name, + "-FORMAT")."""
    progress: bool = True
    """Show a progress bar while scoring."""
    trust_remote_code: bool = False
    """Let transformers run the model repo's own code (only for repos you trust)."""
    allow_pickle: bool = False
    """Load pytorch_model*.bin pickles (with weights_only=True); refused otherwise."""

    def __post_init__(self) -> None:
        if isinstance(self.scoring, dict):  # from YAML or a parsed namespace
            self.scoring = ScoringConfig(**self.scoring)
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all' or 'last', got {self.layers!r}")
        if self.step is not None and self.step < 0:
            raise ValueError(f"step must be >= 0, got {self.step}")

    def replace(self, **overrides) -> QuantizeConfig:
        """A copy with some fields changed, scoring fields by their own names too (``batch_size=4``)."""
        return replace_options(self, **overrides)


@dataclass
class QuantizeResult:
    """What `quantize_model` wrote.

    Attributes:
        store: the new store. step: its one snapshot's step. format: the GGUF type of the matrices.
        tensors: {parameter name: GGUF type ("q8_0", ..., or "f32" when kept)}.
        kl_to_parent: Var/2 KL (bits/byte, last row) to the parent snapshot; None without a parent.
    """

    store: Path
    step: int
    format: str
    tensors: dict[str, str] = field(default_factory=dict)
    kl_to_parent: float | None = None


def _qtype(name: str):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[name.upper()]


def checked_format(fmt: str) -> str:
    """The format in lower case; a name that is not one of FORMATS raises ValueError in one line."""
    name = str(fmt).lower()
    if name not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} (GGUF types the gguf "
                         "package quantizes)")
    return name


def quantization_plan(model, fmt: str, rule: str = "default") -> dict[str, str]:
    """{parameter name: GGUF type} for every parameter of a transformers model, by the module docstring's rule.

    Raises:
        ValueError: a bad format or rule, or a matrix whose rows are not a multiple of 32 (naming it).
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    fmt = checked_format(fmt)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    owner = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    token = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    output = out.weight if out is not None else token  # tied or absent head: the token embedding is the output
    plan, bad = {}, []
    for name, p in model.named_parameters():
        module = owner[id(p)]
        positional = isinstance(module, torch.nn.Embedding) and p is not token
        if p.ndim < 2 or not name.endswith("weight") or positional:
            plan[name] = KEPT
            continue
        plan[name] = "q8_0" if p is output and rule == "default" else fmt
        row = p.shape[0] if isinstance(module, Conv1D) else p.shape[-1]  # Conv1D stores (in, out)
        if row % BLOCK:
            bad.append(f"{name} {tuple(p.shape)}")
    if bad:
        raise ValueError(f"cannot quantize to {fmt}: the rows of {len(bad)} matrices ({', '.join(bad[:3])}) are "
                         f"not a multiple of the {BLOCK}-value block; only models whose matrix rows tile by "
                         f"{BLOCK} can be quantized")
    return plan


def gguf_roundtrip(weight: np.ndarray, qtype: str) -> np.ndarray:
    """gguf.quants.dequantize(gguf.quants.quantize(weight, qtype)) as float32, rows along the last axis."""
    from gguf import quants

    t = _qtype(qtype)
    w = np.ascontiguousarray(weight, dtype=np.float32)
    return quants.dequantize(quants.quantize(w, t), t).reshape(w.shape)


def _quantize_inplace(model, plan: dict[str, str]) -> None:
    import torch
    from transformers.pytorch_utils import Conv1D

    owner = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if plan[name] == KEPT:
                continue
            t = isinstance(owner[id(p)], Conv1D)
            w = p.detach().float().cpu().numpy()
            q = gguf_roundtrip(w.T if t else w, plan[name])
            p.copy_(torch.from_numpy(q.T if t else q).to(p.dtype))


def quantized_copy(model, fmt: str, rule: str = "default"):
    """(a deep copy of `model` with every planned matrix quantized and dequantized by gguf, its plan)."""
    plan = quantization_plan(model, fmt, rule)
    q = copy.deepcopy(model)
    _quantize_inplace(q, plan)
    return q, plan


def _load(model, tokenizer, cfg: QuantizeConfig):
    """(model, tokenizer, source name, run name, owned: whether it may be changed in place)."""
    if not isinstance(model, (str, os.PathLike)):
        if tokenizer is None:
            raise ValueError("a model object needs its tokenizer: pass tokenizer=...")
        name = getattr(model, "name_or_path", "") or type(model).__name__
        return model, tokenizer, str(name), Path(str(name)).name or "model", False
    from trajlab.hub.checkpoints import load_checkpoint, local_only, model_ref, resolve_checkpoint

    ref = model_ref(model, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir)
    ckpt = resolve_checkpoint(ref, cfg.revision, 0, offline=local_only(ref, None),
                              allow_pickle=cfg.allow_pickle, trust_remote_code=cfg.trust_remote_code)
    m, tok = load_checkpoint(ckpt, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    return m, tok, ckpt.source, ref.run_name, True


def _parent(parent: str | None, probe) -> tuple[dict | None, dict, ProbeSet, Path | None]:
    """(lineage or None, the parent store's meta ({} without one), the probe to score, the parent store)."""
    from trajlab.hub.config import import_probe, lineage_from_parent, parse_parent
    from trajlab.store import TrajectoryStore

    if parent is None:
        return None, {}, import_probe(probe, None), None
    lineage = lineage_from_parent(parent)  # one-line ValueError: no store, no such step
    path = parse_parent(parent)[0]
    with TrajectoryStore.open(path) as store:
        meta, own = store.meta, store.probe()
    chosen = own if probe is None else import_probe(probe, None)
    if chosen.fingerprint != own.fingerprint:
        raise ValueError(f"--probe {probe} holds other texts than the parent {parent}'s probe; omit --probe to "
                         "score the parent's, or the KL to the parent cannot be computed")
    return lineage, meta, chosen, path


def _scoring(given: ScoringConfig, recorded: dict) -> ScoringConfig:
    """The scoring of the new rows: the parent's recorded long_texts, stride, window and lens dtype (where
    recorded) over `given`; a value given that is not the default and differs from the parent's raises."""
    parents = {"long_texts": recorded.get("long_texts"), "stride": recorded.get("stride"),
               "max_length": recorded.get("window"), "lens_dtype": recorded.get("lens_dtype")}
    parents = {k: v for k, v in parents.items() if v is not None}
    default = ScoringConfig()
    if clash := [f"{k}={getattr(given, k)!r} (the parent's: {v!r})" for k, v in parents.items()
                 if getattr(given, k) not in (getattr(default, k), v)]:
        raise ValueError(f"scoring option(s) {', '.join(clash)} differ from how the parent was scored; drop "
                         "them: the KL to the parent needs rows scored the same way")
    return given.replace(**parents)


def _check_source(model, tok, probe, parent: Path, step: int, scoring: ScoringConfig) -> None:
    """Warn when the unquantized source does not reproduce the parent snapshot on a few texts."""
    from trajlab.lens import score_model
    from trajlab.store import TrajectoryStore

    n = min(_CHECK_TEXTS, len(probe.texts))
    mine = score_model(model, tok, probe.texts[:n], "last", scoring=scoring)[0]
    with TrajectoryStore.open(parent) as store:
        theirs = store.loglik(-1, steps=[step])[0, :n]
    if (diff := float(np.abs(mine - theirs).max())) > _CHECK_NATS:
        warnings.warn(f"the unquantized model differs from {parent} at step {step} on its first {n} probe texts "
                      f"(max |LL difference| {diff:.3g} nats): the KL to the parent will measure more than "
                      "quantization; name the parent snapshot these weights come from", stacklevel=3)


def quantize_model(
    model: str | os.PathLike | torch.nn.Module,
    fmt: str,
    *,
    out: str | os.PathLike,
    parent: str | None = None,
    probe: ProbeSet | str | os.PathLike | None = None,
    tokenizer=None,
    config: QuantizeConfig | None = None,
    **overrides,
) -> QuantizeResult:
    """Quantize a model's matrices with gguf, score the dequantized model on a probe into a new store.

    Args:
        model: anything `trajlab import` reads (save_pretrained folder, hub id, HF cache folder, GGUF file), or a
            transformers causal LM (left unchanged; pass its `tokenizer`).
        fmt: "q8_0", "q4_0", "q4_1", "q5_0" or "q5_1".
        out: the new store (one snapshot; meta["quantization"] = {"format", "source", "parent", "rule",
            "tensors"}, lineage parent = the parent snapshot).
        parent: "STORE[@STEP]": the snapshot this model is (default the store's last); its probe and scoring
            settings are used, and a warning says when the unquantized model does not reproduce it.
        probe: a ProbeSet, a store or a ProbeSet file (default the parent's, else ProbeSet.default()).
        config, overrides: `QuantizeConfig` and single fields of it.

    Raises:
        ValueError: a bad format or option, a parent that is no store or lacks STEP, a probe other than the
            parent's, rows not a multiple of 32, `out` already a store; nothing is written then.
    """
    from trajlab.data.tokenizer import tokenizer_meta
    from trajlab.lens import score_model
    from trajlab.store import TrajectoryStore
    from trajlab.store.files import check_creatable
    from trajlab.store.meta import model_meta

    cfg = (config or QuantizeConfig()).replace(**overrides)
    fmt = checked_format(fmt)
    out = Path(out)
    try:
        check_creatable(out)
    except FileExistsError as e:
        raise ValueError(f"--out {out}: {e}; write to a new folder") from None
    lineage, pmeta, probe_set, ppath = _parent(parent, probe)
    step = cfg.step if cfg.step is not None else lineage["parent"]["step"] if lineage else 0
    scoring = _scoring(cfg.scoring, pmeta.get("scoring") or {})

    m, tok, source, name, owned = _load(model, tokenizer, cfg)
    plan = quantization_plan(m, fmt, cfg.rule)
    if ppath is not None:
        _check_source(m, tok, probe_set, ppath, lineage["parent"]["step"], scoring)
    t0 = time.perf_counter()
    if not owned:  # the caller's model stays as it was
        m = copy.deepcopy(m)
    _quantize_inplace(m, plan)
    quant_s = time.perf_counter() - t0
    rows, sinfo = score_model(m, tok, probe_set, cfg.layers, scoring=scoring, progress=cfg.progress,
                              return_info=True)

    pinfo = None if lineage is None else {**lineage["parent"], "store": str(ppath)}
    run = cfg.run or f"{pmeta.get('run') or name}-{fmt}"
    meta = {
        "run": run,
        "model": model_meta(m, source),
        "tokenizer": tokenizer_meta(tok),
        "config": {"quantize": {"format": fmt, "rule": cfg.rule, "layers": cfg.layers}},
        "n_params": sum(p.numel() for p in m.parameters()),
        "scoring": sinfo.scoring(),
        "quantization": {"format": fmt, "source": source, "parent": pinfo, "rule": cfg.rule, "tensors": plan,
                         "quantizer": _gguf_version()},
    }
    if lineage is not None:
        meta["lineage"] = lineage
    info = {"quantize_s": round(quant_s, 3), "n_quantized": sum(t != KEPT for t in plan.values())}
    with TrajectoryStore.create(out, probe=probe_set, meta=meta, n_layers=sinfo.n_layers) as store:
        store.append(step, rows, layers=list(sinfo.rows), probe_fingerprint=probe_set.fingerprint,
                     source=f"{source} ({fmt})", info=info)
    kl = None
    if lineage is not None:
        from trajlab.analysis.kl import kl_paired

        with TrajectoryStore.open(ppath) as p:
            base = p.loglik(-1, steps=[lineage["parent"]["step"]])[0]
            kl = float(kl_paired(base, rows[list(sinfo.rows).index(sinfo.n_layers)], p.n_bytes)[0])
    return QuantizeResult(out, step, fmt, plan, kl)


def _gguf_version() -> str:
    from importlib.metadata import version

    return f"gguf {version('gguf')}"


def exact_sequence_kl(base, quant, tokenizer, texts: Sequence[str] | ProbeSet, *,
                      return_n_tokens: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-text sum over scored tokens of KL(base(. | y_<t) || quant(. | y_<t)) over the full vocabulary, in nats.

    The tokens are those an LL entry scores (2..T of the text, add_special_tokens=False, no BOS), with the
    text's own prefix as context (teacher forcing), as llama.cpp's ``--kl-divergence`` averages per token. One
    text at a time, full (T, V) distributions in float64: for small models.

    Returns:
        (N,) float64 nats per text, or (that, (N,) scored tokens per text) with return_n_tokens.

    Raises:
        ValueError: a text with fewer than 2 tokens or longer than the models' context.
    """
    import torch

    texts = list(getattr(texts, "texts", texts))
    ctx = getattr(base.config, "max_position_embeddings", None) or getattr(base.config, "n_positions", None)
    kl, n_tok = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
    device = next(base.parameters()).device
    with torch.inference_mode():
        for i, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not 2 <= len(ids) <= (ctx or len(ids)):
                raise ValueError(f"text {i} has {len(ids)} tokens; the exact KL needs 2..{ctx} (the context)")
            x = torch.tensor([ids], device=device)
            lp = torch.log_softmax(base(input_ids=x).logits[0, :-1].double(), -1)  # (T-1, V)
            lq = torch.log_softmax(quant(input_ids=x).logits[0, :-1].double(), -1)
            kl[i] = float((lp.exp() * (lp - lq)).sum())
            n_tok[i] = len(ids) - 1
    return (kl, n_tok) if return_n_tokens else kl


def quantize_parser():
    """The jsonargparse parser of `trajlab quantize`."""
    from trajlab._args import tool_parser

    p = tool_parser("trajlab quantize", "Quantize a model's matrices with gguf and score it into a new store.",
                    "Flags may use dashes or underscores; rules and formats: docs/quantization.md.")
    p.add_argument("model", type=str, help="save_pretrained folder, hub repo id, HF cache folder or .gguf file")
    p.add_argument("--format", type=str, required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--out", type=str, required=True, help="the new store folder")
    p.add_argument("--parent", type=str | None, default=None, help="STORE[@STEP]: the snapshot this model is")
    p.add_argument("--probe", type=str | None, default=None, help="a store or probe file (default the parent's)")
    p.add_class_arguments(QuantizeConfig, nested_key=None, as_group=False)
    return p


def quantize_main(argv: list[str]) -> int:
    """`trajlab quantize`: returns 0; an error raises before anything is written (one line from trajlab.cli,
    exit 2)."""
    from trajlab._args import parse_tool_args
    from trajlab.hub.config import SCORING_ALIASES

    args = parse_tool_args(quantize_parser(), argv, SCORING_ALIASES)
    values = {f.name: args[f.name] for f in dataclasses.fields(QuantizeConfig)}
    values["scoring"] = ScoringConfig(**dict(vars(values["scoring"])))
    r = quantize_model(args.model, args.format, out=args.out, parent=args.parent, probe=args.probe,
                       config=QuantizeConfig(**values))
    n = sum(t != KEPT for t in r.tensors.values())
    kl = "" if r.kl_to_parent is None else f"; KL to the parent {r.kl_to_parent:.4g} bits/byte"
    print(f"{r.store}: {r.format}, {n} matrices quantized, {len(r.tensors) - n} tensors kept in f32, step "
          f"{r.step}{kl}")
    return 0
