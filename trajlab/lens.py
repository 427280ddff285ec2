"""Scoring kernel: per-text log-likelihoods of a probe set at every layer, through the logit lens.

Convention (the paper's): an entry is the SUM over tokens 2..T of log p(y_t | y_<t), in nats. The first token is
not scored and no BOS is prepended (Pythia's tokenizer adds none), unless ``prefix_bos=True``, which prepends the
tokenizer's BOS and so scores every token of the text. Texts are tokenized with ``add_special_tokens=False``; a
text must have a token to score (probe chunks are > 256 bytes, so a shorter one is refused, naming its index). A
text longer than the window C (the model's context or ``max_length``) is scored whole by sliding windows
(``long_texts="rolling"``, trajlab._windows), cut at C (``"truncate"``) or refused (``"error"``).

Rows of the result: row 0 is the embedding output read through the lens, row l the residual stream after block l
read through the lens (final norm + unembedding), and the last row, n_layers, the model's own output.

Models: a transformers causal LM (GPT-NeoX, GPT-2, Llama/Mistral/Qwen-style), or any object following
`LensAdapter`.

For a transformers model the last hidden state is already final-normed, so the last row applies only the
unembedding to it (never the norm twice) and equals the model's own logits.

Kernel: windows (a text that fits is one), sorted by length, right-padded with an attention mask, one forward
per batch; only the scored positions (non-pad, not scored by an earlier window) are gathered before the
unembedding. Per position, log p = -log sum_v exp(z_v - z_target): the target logit
z_target = <normed h, W_target> (+ bias) comes first, so the sum needs no max pass and is >= 1; the rare position
where it overflows is recomputed with a full log_softmax. With `Unembed` the logits are made in tiles of `TILE_SHAPE` (tokens x vocab) that stay in cache while
exp and sum read them; an adapter's `unembed` is called on token chunks of about `CHUNK_ELEMENTS` logits. Either
way no (tokens x vocab) tensor outlives a tile or chunk. Per-text sums are accumulated in float64.

Dtype: the model's own, and the lens GEMMs' as `trajlab._precision` says (``lens_dtype``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from trajlab import _windows
from trajlab._precision import resolved_lens_dtype
from trajlab.data.probe import ProbeSet
from trajlab.scoring_config import ScoringConfig

# (tokens, vocab) per logits tile of the Unembed path, by device type. CPU (tuned with scripts/bench_lens.py):
# 32 MiB, near cache; smaller tiles were ~5% faster on an idle machine but several times slower on a busy one,
# where every parallel op waits for a descheduled thread. Elsewhere (GPU, untuned) large tiles, few launches.
TILE_SHAPE = {"cpu": (2048, 4096), "default": (4096, 16384)}
CHUNK_ELEMENTS = 2**24  # logits per chunk of the adapter path (64 MiB fp32): tokens = CHUNK_ELEMENTS // vocab

_FINAL_NORMS = ("gpt_neox.final_layer_norm", "transformer.ln_f", "model.norm")
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@runtime_checkable
class LensAdapter(Protocol):
    """What `score_model` needs from a model that is not a transformers causal LM.

    hidden_states(input_ids, attention_mask) -> n_layers + 1 tensors (B, T, d): the embedding output, then the
        residual after each block; the LAST one is the residual after the final block, BEFORE the final norm.
    unembed(h) -> logits (..., V): final norm + unembedding of (..., d).
    Optional attributes, read when present: n_layers (int), context_length (int, the window),
    num_embeddings (int, token-id check), device (where inputs go).
    """

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Sequence[torch.Tensor]: ...

    def unembed(self, h: torch.Tensor) -> torch.Tensor: ...


class Unembed:
    """Final norm + unembedding of a transformers causal LM; the one place that knows where they live.

    Args:
        model: a GPT-NeoX, GPT-2 or Llama/Mistral/Qwen-style causal LM.

    Raises:
        ValueError: the final norm or the output embeddings cannot be found, or the model transforms its logits
            in a way the lens does not reproduce.
    """

    def __init__(self, model: torch.nn.Module):
        name = type(model).__name__
        self.norm = None
        for path in _FINAL_NORMS:
            try:
                self.norm = model.get_submodule(path)
                break
            except AttributeError:
                continue
        if self.norm is None:
            raise ValueError(f"Unembed: cannot find the final norm of {name} (tried {', '.join(_FINAL_NORMS)}); "
                             "score it through a LensAdapter instead")
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None or not hasattr(head, "weight"):
            raise ValueError(f"Unembed: {name} has no output embeddings (get_output_embeddings() gave {head!r})")
        for attr in _LOGIT_TRANSFORMS:
            value = getattr(getattr(model, "config", None), attr, None)
            if value not in (None, 1, 1.0):
                raise ValueError(f"Unembed: {name} applies {attr}={value} to its logits, which the lens does not "
                                 "reproduce; score it through a LensAdapter instead")
        self.weight: torch.Tensor = head.weight  # (V, d)
        self.bias: torch.Tensor | None = getattr(head, "bias", None)  # (V,) or None

    def __call__(self, h: torch.Tensor, *, normed: bool = False) -> torch.Tensor:
        """Logits (..., V) of hidden states h (..., d).

        Args:
            h: residual-stream states.
            normed: h is already final-normed (transformers' last hidden state): apply only the unembedding.
        """
        z = (h if normed else self.norm(h)) @ self.weight.T
        return z if self.bias is None else z + self.bias

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    @cached_property
    def fingerprint(self) -> str:
        """Short sha256 hex of the unembedding weights (and bias), dtype and shape included."""
        h = hashlib.sha256()
        for t in (self.weight, self.bias):
            if t is not None:
                t = t.detach().to("cpu").contiguous()
                h.update(f"{tuple(t.shape)}:{t.dtype};".encode())
                h.update(t.view(torch.uint8).numpy())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class ScoreInfo:
    """What `score_model(..., return_info=True)` reports besides the scores.

    Attributes:
        rows: the row index (0..n_layers) of each output row.
        n_layers: blocks in the model.
        n_tokens: (N,) int64 scored tokens per text: T - 1 unless truncated (T tokens, BOS included).
        n_truncated: texts cut at the context length (long_texts="truncate").
        context_length: the window C used (None: no limit known).
        long_texts: "rolling", "truncate" or "error", as asked.
        stride: the rolling stride S used (None unless rolling with a known window).
        window: the window C used (the same as context_length).
        lens_dtype: the dtype of the lens GEMMs after "auto" and None resolved ("float32", "bfloat16", ...).
    """

    rows: tuple[int, ...]
    n_layers: int
    n_tokens: np.ndarray
    n_truncated: int
    context_length: int | None
    long_texts: str = "truncate"
    stride: int | None = None
    window: int | None = None
    lens_dtype: str = "float32"

    def scoring(self) -> dict:
        """How the rows were scored: the store's meta["scoring"] block (`ScoringConfig.record`)."""
        used = ScoringConfig(self.long_texts, self.stride)
        return used.record(window=self.window, n_tokens=self.n_tokens, lens_dtype=self.lens_dtype)


class _HFSource:
    """A transformers causal LM seen through the lens."""

    def __init__(self, model: torch.nn.Module):
        self.module = model
        self.unembed = Unembed(model)
        self.base = model.base_model
        if self.base is model:
            raise ValueError(f"{type(model).__name__} has no separate base model; score it through a LensAdapter")
        cfg = model.config
        self.n_layers: int = cfg.num_hidden_layers
        self.context_length: int | None = getattr(cfg, "max_position_embeddings", None) or getattr(
            cfg, "n_positions", None)
        self.num_embeddings: int | None = model.get_input_embeddings().num_embeddings
        self.device = next(model.parameters()).device
        self.dtype = self.unembed.weight.dtype
        self.w_gemm = self.unembed.weight

    def use_lens_dtype(self, dtype: torch.dtype) -> None:
        """Run the lens GEMMs in `dtype` (a copy of the unembedding made once per call when it differs)."""
        w = self.unembed.weight
        self.w_gemm = w if w.dtype == dtype else w.detach().to(dtype)

    def states(self, ids: torch.Tensor, mask: torch.Tensor, rows: Sequence[int]) -> list[torch.Tensor]:
        """The (B, T, d) hidden states at `rows`."""
        if list(rows) == [self.n_layers]:  # only the model's own output: skip the per-layer states
            out = self.base(input_ids=ids, attention_mask=mask, use_cache=False)
            return [out.last_hidden_state]
        hs = self.base(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states
        if len(hs) != self.n_layers + 1:
            raise ValueError(f"{type(self.module).__name__} returned {len(hs)} hidden states, expected "
                             f"n_layers + 1 = {self.n_layers + 1}")
        return [hs[r] for r in rows]

    def logprobs(self, h: torch.Tensor, row: int, targets: torch.Tensor) -> torch.Tensor:
        """(n,) fp32 log p(targets) from states h (n, d) at `row`."""
        x = h if row == self.n_layers else self.unembed.norm(h)  # (n, d) final-normed
        return _tiled_logprobs(self.unembed, x, targets, self.w_gemm)


class _AdapterSource:
    """A `LensAdapter` seen through the lens."""

    def __init__(self, adapter: LensAdapter, first_ids: list[int]):
        self.module = adapter
        self.context_length: int | None = getattr(adapter, "context_length", None)
        self.num_embeddings: int | None = getattr(adapter, "num_embeddings", None)
        device = getattr(adapter, "device", None)
        if device is None and isinstance(adapter, torch.nn.Module):
            device = next(adapter.parameters(), torch.empty(0)).device
        self.device = torch.device(device or "cpu")
        params = adapter.parameters() if isinstance(adapter, torch.nn.Module) else iter(())
        self.dtype = getattr(adapter, "dtype", None) or next(params, torch.empty(0)).dtype
        self.n_layers: int = getattr(adapter, "n_layers", None) or self._counted_layers(first_ids)

    def _counted_layers(self, ids: list[int]) -> int:
        x = torch.tensor([ids[:2]], device=self.device)
        with torch.inference_mode():
            return len(self.module.hidden_states(x, torch.ones_like(x))) - 1

    def states(self, ids: torch.Tensor, mask: torch.Tensor, rows: Sequence[int]) -> list[torch.Tensor]:
        hs = self.module.hidden_states(ids, mask)
        if len(hs) != self.n_layers + 1:
            raise ValueError(f"LensAdapter.hidden_states returned {len(hs)} tensors, expected n_layers + 1 = "
                             f"{self.n_layers + 1}")
        return [hs[r] for r in rows]

    def logprobs(self, h: torch.Tensor, row: int, targets: torch.Tensor) -> torch.Tensor:
        """(n,) fp32 log p(targets) from states h (n, d)."""
        return _chunked_logprobs(self.module.unembed, h, targets)


def _tiled_logprobs(un: Unembed, x: torch.Tensor, targets: torch.Tensor, w_gemm: torch.Tensor) -> torch.Tensor:
    """(n,) fp32 log p(targets) of final-normed states x (n, d), one (tokens x vocab) tile at a time.

    The tile GEMMs use w_gemm (un.weight, or its copy in the lens dtype) and x cast to its dtype; the target
    logit, the bias, exp and sum are fp32.
    """
    n, vocab = x.shape[0], un.vocab_size
    c, vt = TILE_SHAPE.get(x.device.type, TILE_SHAPE["default"])
    c, vt = min(c, n), min(vt, vocab)
    n_tiles = -(-vocab // vt)
    fp32 = w_gemm.dtype == torch.float32
    tile = torch.empty(c * vt, dtype=w_gemm.dtype, device=x.device)  # flat, so every (m, k) view is contiguous
    tile32 = tile if fp32 else torch.empty(c * vt, dtype=torch.float32, device=x.device)
    sumexp = torch.empty(c, n_tiles, dtype=torch.float32, device=x.device)  # per-tile partial sums
    lp = torch.empty(n, dtype=torch.float32, device=x.device)
    for s in range(0, n, c):
        xs, ts = x[s:s + c], targets[s:s + c]  # (m, d), (m,)
        m = xs.shape[0]
        zt = (xs.float() * un.weight[ts].float()).sum(-1, keepdim=True)  # (m, 1) target logits
        if un.bias is not None:
            zt += un.bias[ts, None].float()
        xg = xs.to(w_gemm.dtype)  # (m, d) no copy when the dtypes agree
        for j, v in enumerate(range(0, vocab, vt)):
            w = w_gemm[v:v + vt]  # (k, d)
            k = w.shape[0]
            if fp32 and un.bias is None:
                z32 = torch.addmm(-zt, xg, w.T, out=tile[: m * k].view(m, k))  # (m, k) z - z_t in one pass
            else:
                z = torch.matmul(xg, w.T, out=tile[: m * k].view(m, k))  # (m, k) GEMM dtype
                z32 = z if fp32 else tile32[: m * k].view(m, k).copy_(z)
                if un.bias is not None:
                    z32 += un.bias[v:v + k]
                z32 -= zt
            torch.sum(z32.exp_(), -1, out=sumexp[:m, j])
        lp[s:s + c] = sumexp[:m].sum(-1).log_().neg_()
    return _exact_where_overflowed(lambda h: un(h, normed=True), x, targets, lp)


def _chunked_logprobs(unembed: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """(n,) fp32 log p(targets) for states h (n, d) through a black-box unembed, in chunks of full-vocab logits."""
    n = h.shape[0]
    lp = torch.empty(n, dtype=torch.float32, device=h.device)
    s, c = 0, 64  # the first chunk reveals the vocabulary size
    while s < n:
        z = unembed(h[s:s + c]).float()  # (m, V)
        zt = z.gather(1, targets[s:s + c, None])  # (m, 1)
        lp[s:s + c] = z.sub_(zt).exp_().sum(-1).log_().neg_()  # -log sum_v exp(z_v - z_t)
        s += z.shape[0]
        c = max(1, CHUNK_ELEMENTS // z.shape[1])
    return _exact_where_overflowed(unembed, h, targets, lp)


def _exact_where_overflowed(unembed: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor,
                            targets: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
    """lp with non-finite entries (z_v - z_t overflowed exp, or the model gave inf/nan) redone by log_softmax."""
    bad = (~torch.isfinite(lp)).nonzero().squeeze(1)
    if bad.numel():
        z = unembed(h[bad]).float()  # (n_bad, V)
        lp[bad] = torch.log_softmax(z, -1).gather(1, targets[bad, None]).squeeze(1)
    return lp


def score_model(
    model,
    tokenizer,
    probe: ProbeSet | Sequence[str],
    layers: Literal["all", "last"] | Sequence[int] = "all",
    *,
    scoring: ScoringConfig | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    return_info: bool = False,
    **options,
) -> np.ndarray | tuple[np.ndarray, ScoreInfo]:
    """Per-text log-likelihoods (nats, summed over tokens 2..T) at the requested lens rows.

    Args:
        model: a transformers causal LM or a `LensAdapter`.
        tokenizer: the model's tokenizer (called with add_special_tokens=False).
        probe: a ProbeSet or a list of texts.
        layers: "all" (rows 0..n_layers), "last" (only the model's own output; no lens computed), or a list of
            row indices 0..n_layers, returned in that order.
        scoring: the scoring options (`trajlab.scoring_config.ScoringConfig`; default ScoringConfig()).
        device: where inputs go; default the model's device (a transformers model must already be there).
        progress: show a progress bar over batches.
        return_info: also return a `ScoreInfo` (scored tokens per text, how the texts were scored).
        **options: ScoringConfig fields that change `scoring`: long_texts ("rolling" scores a text longer than
            the window C whole in sliding windows, see trajlab._windows; "truncate" its first C tokens, warning;
            "error" refuses it), stride (1..C-1, default C // 2), max_length (the window C, default the
            model's context), lens_dtype (None: the model's own; "float32"; "bfloat16": only the unembedding
            GEMMs, exp and sum stay fp32; "auto": bf16 where the device multiplies it natively,
            `trajlab._precision.has_fast_bf16`), prefix_bos (prepend the tokenizer's BOS so the first text token
            is scored too), batch_size (windows per forward).

    Returns:
        float64 array (len(rows), N), or (array, ScoreInfo) with return_info=True.

    Raises:
        ValueError: empty probe, a text with nothing to score, token ids beyond the model's embedding, layers out
            of range, a bad scoring option, a text longer than the window with long_texts="error", a
            non-finite log-likelihood (naming the text), or a model the lens cannot read.
        UnknownOptionError: an option that is no ScoringConfig field (a TypeError and a ValueError).
    """
    cfg = (scoring or ScoringConfig()).replace(**options)
    texts = _windows.checked_texts(probe.texts if isinstance(probe, ProbeSet) else probe)

    hf = not isinstance(model, LensAdapter)
    if hf and not hasattr(model, "config"):
        raise ValueError(f"model must be a transformers causal LM or a LensAdapter, got {type(model).__name__}")
    src = _HFSource(model) if hf else None
    ctx = cfg.window(src.context_length if hf else getattr(model, "context_length", None))
    stride = cfg.stride_in(ctx)
    encoded = _windows.encoded_texts(tokenizer, texts, cfg.prefix_bos)
    encoded, n_truncated = _windows.fitted(encoded, cfg.long_texts, ctx, stacklevel=2)
    _windows.check_ids(encoded, src.num_embeddings if hf else getattr(model, "num_embeddings", None))
    src = src or _AdapterSource(model, encoded[0])
    rows = _windows.resolved_rows(layers, src.n_layers)
    device = torch.device(device) if device is not None else src.device
    if hf and (device.type != src.device.type or device.index not in (None, src.device.index)):
        raise ValueError(f"the model is on {src.device}, not {device}: move it with model.to(...) or pass device=None")
    gemm_dtype = resolved_lens_dtype(cfg.lens_dtype, src.dtype, device, hf)
    if hf:
        src.use_lens_dtype(gemm_dtype)

    n_tokens = np.array([len(ids) - 1 for ids in encoded], dtype=np.int64)
    batches = _windows.batches_of(_windows.windows_of(encoded, ctx, stride), cfg.batch_size)
    ll = torch.zeros(len(rows), len(texts), dtype=torch.float64)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    module = src.module if isinstance(src.module, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                ids, mask, scored, text = _windows.padded(batch)  # (B, T), (B, T), (B, T-1), (B,)
                owner = text.view(-1, 1).expand(scored.shape)[scored]  # (n,) text index
                ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
                targets = ids[:, 1:][scored]  # (n,)
                for k, (row, h) in enumerate(zip(rows, src.states(ids, mask, rows))):
                    lp = src.logprobs(h[:, :-1][scored], row, targets)  # (n,)
                    ll[k].index_add_(0, owner, lp.to("cpu", torch.float64))
    finally:
        if module is not None:
            module.train(was_training)

    ll = ll.numpy()
    bad = np.argwhere(~np.isfinite(ll))
    if bad.size:
        k, i = bad[0]
        raise ValueError(f"non-finite log-likelihood for text {i} at row {rows[k]} ({len(bad)} entries in all): "
                         "the model produced inf/nan; check its weights and dtype")
    if return_info:
        return ll, ScoreInfo(tuple(rows), src.n_layers, n_tokens, n_truncated, ctx, cfg.long_texts, stride, ctx,
                             str(gemm_dtype).removeprefix("torch."))
    return ll
