"""WeightSketch (hash, unbiasedness, variance bound, determinism, shard invariance) and WeightHistory."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from trajlab.sketch import WeightHistory, WeightSketch


def random_params(seed: int, scale: float = 1.0) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("block.w", torch.randn(60, 50, generator=g) * scale),
        ("block.b", torch.randn(77, generator=g) * scale),
    ]


def fmix32_reference(h: int) -> int:
    """MurmurHash3 fmix32 on Python ints (the definition the docstring gives)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def bucket_sign_reference(seed: int, name: str, i: int, k: int) -> tuple[int, int]:
    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest()
    lo, hi = int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")
    u = fmix32_reference(fmix32_reference((i & 0xFFFFFFFF) ^ lo) ^ (i >> 32) ^ hi)
    return (u & 0x7FFFFFFF) % k, 1 if u < 1 << 31 else -1


@pytest.mark.parametrize("index", [0, 1, 12345, 2**31 + 7, 2**32 - 1, 2**32 + 3, 5 * 2**40 + 11])
def test_sketch_of_unit_vector_follows_documented_hash(index):
    sk = WeightSketch(k=1000, seed=7)
    got = sk.sketch([("layers.0.w", torch.tensor([2.5]), index)])  # a one-element shard at flat index `index`
    bucket, sign = bucket_sign_reference(7, "layers.0.w", index, 1000)
    want = np.zeros(1000)
    want[bucket] = 2.5 * sign
    np.testing.assert_array_equal(got, want)


def test_unbiased_with_variance_within_bound():
    k, seeds = 128, 300
    a, b = random_params(0), random_params(1, scale=0.5)
    d2 = sum(float(((x.double() - y.double()) ** 2).sum()) for (_, x), (_, y) in zip(a, b, strict=True))
    rel = np.array(
        [
            np.sum((WeightSketch(k, s).sketch(a) - WeightSketch(k, s).sketch(b)) ** 2) / d2 - 1
            for s in range(seeds)
        ]
    )
    bound = 2 / k  # Var[rel] <= 2/k, nearly attained by a dense difference vector
    assert abs(rel.mean()) < 4 * np.sqrt(bound / seeds)
    assert 0.7 * bound < rel.var() < 1.3 * bound


def test_deterministic_seeded_and_linear():
    a, b = random_params(0), random_params(1)
    s1, s2 = WeightSketch(256, seed=3), WeightSketch(256, seed=3)
    assert np.array_equal(s1.sketch(a), s2.sketch(a))
    assert np.array_equal(s1.sketch(a), s1.sketch(a))  # second call served from the hash cache
    assert np.array_equal(s1.sketch(a), WeightSketch(256, seed=3, cache_elements=0).sketch(a))
    assert not np.allclose(s1.sketch(a), WeightSketch(256, seed=4).sketch(a))
    diff = [(n, x.double() - y.double()) for (n, x), (_, y) in zip(a, b, strict=True)]
    np.testing.assert_allclose(s1.sketch(a) - s1.sketch(b), s1.sketch(diff), rtol=1e-12, atol=1e-12)


def test_shard_and_chunk_layout_invariance():
    params = random_params(2)
    whole = WeightSketch(512, seed=1).sketch(params)
    shards_a = [(n, t.reshape(-1)[: t.numel() // 3], 0) for n, t in params]
    shards_b = [(n, t.reshape(-1)[t.numel() // 3 :], t.numel() // 3) for n, t in params]
    sk = WeightSketch(512, seed=1)
    np.testing.assert_allclose(sk.sketch(shards_a) + sk.sketch(shards_b), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sk.sketch(params[:1]) + sk.sketch(params[1:]), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        WeightSketch(512, seed=1, chunk=97).sketch(params), whole, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(WeightSketch(512, seed=1).sketch(params[::-1]), whole, rtol=1e-12, atol=1e-12)


def test_module_uses_named_parameters_once_per_tied_weight():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(30, 8), torch.nn.Linear(8, 30, bias=False))
    model[1].weight = model[0].weight  # tied: named_parameters lists it once, as "0.weight"
    sk = WeightSketch(64)
    assert [n for n, _ in model.named_parameters()] == ["0.weight"]
    assert np.array_equal(sk.sketch(model), sk.sketch([("0.weight", model[0].weight)]))
    bf16 = [(n, p.to(torch.bfloat16)) for n, p in model.named_parameters()]
    np.testing.assert_array_equal(sk.sketch(bf16), sk.sketch([(n, t.float()) for n, t in bf16]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_sketches_agree():
    params = random_params(3)
    cpu = WeightSketch(512, seed=5).sketch(params)
    cuda = WeightSketch(512, seed=5).sketch([(n, t.cuda()) for n, t in params])
    np.testing.assert_allclose(cuda, cpu, rtol=1e-13, atol=1e-13)


def test_weight_history_exact_distances_against_numpy():
    hist = WeightHistory(window=3, chunk=101)
    snaps = {}
    for step in (0, 10, 20, 30, 40):
        params = random_params(step, scale=1 + step / 10)
        params[1] = (params[1][0], params[1][1].to(torch.float16))  # mixed dtypes are copied to fp32
        snaps[step] = np.concatenate([t.float().numpy().reshape(-1) for _, t in params]).astype(np.float64)
        got = hist.push(step, params)
        earlier = [s for s in snaps if s < step][-3:]
        assert sorted(got) == earlier
        for s in earlier:
            want = np.sum((snaps[step] - snaps[s]) ** 2)
            assert got[s] == pytest.approx(want, rel=1e-13)
    assert hist.steps == [20, 30, 40]


def test_weight_history_refusals():
    hist = WeightHistory(window=2)
    hist.push(5, random_params(0))
    with pytest.raises(ValueError, match="larger than the last pushed step 5"):
        hist.push(5, random_params(1))
    with pytest.raises(ValueError, match="parameters differ"):
        hist.push(6, random_params(1)[:1])
    with pytest.raises(ValueError, match="window >= 1"):
        WeightHistory(window=0)
    with pytest.raises(ValueError, match="1 <= k"):
        WeightSketch(k=0)
