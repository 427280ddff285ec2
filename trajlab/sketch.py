"""Weight-space geometry: a seeded linear sketch of the parameters, and exact distances between snapshots.

Both read parameters by name (``model.named_parameters()``, or whatever names a wrapper module gives), so
they do not depend on parameter order, device or how a parameter is sharded.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

_M32 = 0xFFFFFFFF
NamedParams = nn.Module | Iterable[tuple[str, torch.Tensor]] | Iterable[tuple[str, torch.Tensor, int]]


def _named_flat(params: NamedParams) -> Iterable[tuple[str, torch.Tensor, int]]:
    """(name, flat values, flat offset of values[0] within the named parameter) for each item."""
    items = params.named_parameters() if isinstance(params, nn.Module) else params
    for item in items:
        name, tensor, offset = item if len(item) == 3 else (*item, 0)
        yield name, tensor.detach().reshape(-1), int(offset)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32) and a 32-bit constant, never overflowing int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser (a bijection with full avalanche) on int64 lanes of 32-bit values."""
    h = _mul32(h ^ (h >> 16), 0x85EBCA6B)
    h = _mul32(h ^ (h >> 13), 0xC2B2AE35)
    return h ^ (h >> 16)


class WeightSketch:
    """A seeded CountSketch of the parameter vector: S(theta) = sum_g s(g) theta_g e_{h(g)}, in R^k (float64).

    Hash definition (identical on every device and shard layout): for parameter `name` and flat index `i`,
    let (key_lo, key_hi) be the little-endian 32-bit words of blake2b(f"{seed}\\0{name}", digest_size=8),
    ``u = fmix32(fmix32((i mod 2**32) ^ key_lo) ^ (i >> 32) ^ key_hi)`` with fmix32 MurmurHash3's finaliser;
    then bucket h = (u mod 2**31) mod k and sign s = +1 if u < 2**31 else -1. All integer work is int64 torch
    arithmetic that never overflows, so CPU and CUDA agree bit for bit on (h, s). The float64 accumulation is
    bitwise reproducible on CPU; on CUDA index_add_ adds in a varying order (differences ~1e-16 relative).

    S is linear, so for weights a and b, ||S(a) - S(b)||^2 = ||S(a - b)||^2 estimates ||a - b||^2 without
    bias, with variance (2/k) * (||d||^4 - sum_g d_g^4) <= 2 ||d||^4 / k (d = a - b): the relative error has
    standard deviation <= sqrt(2/k), about 2.2% at k = 4096.

    Args:
        k: sketch dimension.
        seed: selects the hash functions; sketches are comparable only with the same (k, seed).
        chunk: elements hashed at once (bounds temporary memory to ~10 int64 tensors of this size).
        cache_elements: up to this many elements keep their (bucket, sign) between calls (5 bytes each), which
            makes repeated sketches of a small model several times faster.
    """

    def __init__(self, k: int = 4096, seed: int = 0, chunk: int = 1 << 21, cache_elements: int = 1 << 24):
        if not 1 <= k < 1 << 31 or chunk < 1:
            raise ValueError(f"need 1 <= k < 2**31 and chunk >= 1, got k={k}, chunk={chunk}")
        self.k, self.seed, self.chunk, self.cache_elements = k, seed, chunk, cache_elements
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached = 0

    @property
    def spec(self) -> dict:
        """What identifies this sketch (record it with the store so later sketches use the same one)."""
        return {"method": "countsketch-fmix32x2", "k": self.k, "seed": self.seed}

    def sketch(self, params: NamedParams) -> np.ndarray:
        """(k,) float64 sketch of a module's parameters, or of (name, tensor[, flat offset]) items.

        Items with an offset are shards: a flat slice of parameter `name` starting at that flat index, so the
        sketches of all shards of a model sum to the sketch of the whole model.
        """
        acc: dict[torch.device, torch.Tensor] = {}  # device -> (k,) float64
        for name, flat, offset in _named_flat(params):
            out = acc.setdefault(flat.device, torch.zeros(self.k, dtype=torch.float64, device=flat.device))
            for start in range(0, flat.numel(), self.chunk):
                values = flat[start : start + self.chunk]
                bucket, sign = self._bucket_sign(name, offset + start, values.numel(), flat.device)
                out.index_add_(0, bucket, values.double() * sign)
        total = torch.zeros(self.k, dtype=torch.float64)
        for out in acc.values():
            total += out.cpu()
        return total.numpy()

    def _bucket_sign(
        self, name: str, start: int, n: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n,) int32 buckets and (n,) int8 signs of flat indices start..start+n-1 of parameter `name`."""
        key = (name, start, n, device)
        if key in self._cache:
            return self._cache[key]
        digest = hashlib.blake2b(f"{self.seed}\0{name}".encode(), digest_size=8).digest()
        key_lo, key_hi = int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")
        index = torch.arange(start, start + n, dtype=torch.int64, device=device)
        u = _fmix32(_fmix32((index & _M32) ^ key_lo) ^ ((index >> 32) & _M32) ^ key_hi)
        bucket = ((u & 0x7FFFFFFF) % self.k).to(torch.int32)
        sign = (1 - 2 * (u >> 31)).to(torch.int8)
        if self._cached + n <= self.cache_elements:
            self._cache[key] = bucket, sign
            self._cached += n
        return bucket, sign


class WeightHistory:
    """The last `window` weight snapshots (fp32, on CPU), giving exact squared L2 distances to each new one.

    Memory: window x n_params x 4 bytes, plus one more snapshot during `push` (410M params, window 10: 18 GB;
    70M params: 3 GB). Distances are sums over all parameters of (a - b)^2 on the fp32 copies, accumulated in
    float64. Nothing is saved for resume: after a restart, the first snapshots have distances only to
    snapshots pushed since the restart, and the store reports the missing pairs as NaN.

    Args:
        window: how many previous snapshots each new one is compared with.
        chunk: elements differenced at once (bounds the float64 temporaries).
    """

    def __init__(self, window: int = 10, chunk: int = 1 << 22):
        if window < 1 or chunk < 1:
            raise ValueError(f"need window >= 1 and chunk >= 1, got window={window}, chunk={chunk}")
        self.window, self.chunk = window, chunk
        self._held: deque[tuple[int, torch.Tensor]] = deque(maxlen=window)  # (step, (n_params,) float32)
        self._layout: list[tuple[str, int]] | None = None  # (name, numel) of the first push

    @property
    def steps(self) -> list[int]:
        """Steps of the held snapshots, oldest first."""
        return [s for s, _ in self._held]

    def push(self, step: int, params: NamedParams) -> dict[int, float]:
        """Hold the weights of `step`; returns {held earlier step: exact squared L2 distance to it}."""
        if self._held and step <= self._held[-1][0]:
            raise ValueError(f"step {step} must be larger than the last pushed step {self._held[-1][0]}")
        named = [(name, flat) for name, flat, _ in _named_flat(params)]
        layout = [(name, flat.numel()) for name, flat in named]
        if self._layout is not None and layout != self._layout:
            differ = sorted(set(layout) ^ set(self._layout))[:3]  # (name, numel) in one layout only
            raise ValueError(
                f"step {step}: parameters differ from the first snapshot's, e.g. {differ}; "
                "WeightHistory needs the same named parameters every time"
            )
        self._layout = layout
        current = torch.empty(sum(n for _, n in layout), dtype=torch.float32)  # (n_params,)
        offset = 0
        for _, flat in named:
            current[offset : offset + flat.numel()].copy_(flat)
            offset += flat.numel()
        dists = {prev: self._sq_dist(current, held) for prev, held in self._held}
        self._held.append((step, current))
        return dists

    def _sq_dist(self, a: torch.Tensor, b: torch.Tensor) -> float:
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, a.numel(), self.chunk):
            part = slice(start, start + self.chunk)
            total += (a[part].double() - b[part].double()).square().sum()
        return float(total)
