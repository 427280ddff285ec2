"""Seeded calibration cases: each test's false-positive rate without the effect and its power with it.

One registry serves the tests (few replicates, tests/analysis/test_calibration_cases.py) and
`python scripts/calibrate.py --write-doc` (more replicates, docs/calibration.md). A case draws one data set
from its generator (trajlab.analysis.simulate / simulate_walks), runs one of trajlab's tests on it and says
whether the test fired (or, for intervals, whether it covered the truth). Kinds:
- "false positive": data without the effect; rate must be <= limit (0.10 at nominal 0.05).
- "power": data with the effect; rate must be >= limit (0.8).
- "coverage": the share of 95% intervals that hold the truth; must be >= limit.
- "reference": a rate measured for comparison only (e.g. the old nulls that the data beat); no limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trajlab.analysis import simulate as sim
from trajlab.analysis import simulate_walks as walks
from trajlab.analysis.bootstrap import bootstrap_kl, bootstrap_order
from trajlab.analysis.calibrate import spiral_test, thread_test
from trajlab.analysis.exponent_order import bootstrap_exponent_order
from trajlab.analysis.order import order_test, paired_order_test

ALPHA = 0.05
K, N = 56, 256  # snapshots and texts of the trajectory cases (the toy's dense schedule)
N_LAYERS, K_LAYERS = 7, 4  # layer states (a 6-layer model) and snapshots of the layer cases


@dataclass(frozen=True)
class Case:
    name: str
    test: str
    kind: str  # "false positive" | "power" | "coverage" | "reference"
    data: str
    fn: Callable[[np.random.Generator], bool]
    limit: float | None
    test_reps: int  # replicates in `make test`
    doc_reps: int  # replicates in scripts/calibrate.py


def _order(n_small: int, n_large: int, two: bool) -> Callable[[np.random.Generator], bool]:
    def fn(rng: np.random.Generator) -> bool:
        pairs = sim.two_distribution_pairs if two else sim.same_distribution_pairs
        small, large = pairs(rng, n_small, n_large)
        return bool(order_test(small, large, n_boot=20, seed=int(rng.integers(1 << 30)))["holds"])

    return fn


def _paired(effect: float) -> Callable[[np.random.Generator], bool]:
    def fn(rng: np.random.Generator) -> bool:
        run = rng.normal(1.0, 0.3, 6)  # a run effect shared by both values of a run (Early and Later of one run)
        small, large = run * sim.lognormal_kls(rng, 6, 1.0, 0.17), run * sim.lognormal_kls(rng, 6, 1.0 + effect, 0.17)
        return bool(paired_order_test(small, large, n_boot=20)["holds"])

    return fn


def _text_bootstrap(n_small: int, n_large: int) -> Callable[[np.random.Generator], bool]:
    def fn(rng: np.random.Generator) -> bool:
        small, large = sim.same_distribution_pairs(rng, n_small, n_large)
        ll, pairs = sim.ll_for_pairs(rng, np.concatenate([small, large]), 256)
        res = bootstrap_order(ll, pairs[:n_small], pairs[n_small:], n_boot=200, seed=int(rng.integers(1 << 30)))
        return bool(res["diff"] > 0 and res["p_value"] < ALPHA)

    return fn


def _coverage(kind: str) -> Callable[[np.random.Generator], bool]:
    def fn(rng: np.random.Generator) -> bool:
        d = sim.text_differences(rng, 256, kind)[0]  # true KL = Var/2 = 0.5
        _, lo, hi = bootstrap_kl(d, np.zeros_like(d), n_boot=500, seed=int(rng.integers(1 << 30)))
        return bool(lo <= 0.5 <= hi)

    return fn


def _exponents(c_small: float, c_large: float) -> Callable[[np.random.Generator], bool]:
    def fn(rng: np.random.Generator) -> bool:
        a, b = sim.walk_fits(rng, exponent=c_small), sim.walk_fits(rng, exponent=c_large)
        res = bootstrap_exponent_order(a, b, n_boot=200, seed=int(rng.integers(1 << 30)), block=10)
        return bool(res["diff"] > 0 and res["p_value"] < ALPHA)

    return fn


def _spiral(
    make: Callable,
    null: str = "signflip",
    method: str = "pca",
    n_null: int = 99,
    any_verdict: bool = False,
    warmup: int | None = None,
) -> Callable:
    def fn(rng: np.random.Generator) -> bool:
        ll = make(rng)
        steps = None if warmup is None else np.arange(len(ll))  # snapshots before `warmup` left out
        res = spiral_test(ll, method, n_null, int(rng.integers(1 << 30)), null=null, steps=steps,
                          warmup_steps=warmup)
        if any_verdict:  # either direction (winds more or less) counts as firing
            return res["verdict"] != "not distinguishable"
        return bool(res["p_value"] < ALPHA)

    return fn


def _threads(make: Callable, key: str) -> Callable[[np.random.Generator], bool]:
    def fn(rng: np.random.Generator) -> bool:
        res = thread_test(make(rng), n_null=200, seed=int(rng.integers(1 << 30)))
        return bool(res[key] < ALPHA)

    return fn


_iso = lambda rng: walks.isotropic_walk(rng, K, N)
_aniso1 = lambda rng: walks.anisotropic_walk(rng, K, N, 1.0)
_aniso2 = lambda rng: walks.anisotropic_walk(rng, K, N, 2.0)
_transient = lambda rng: walks.transient_walk(rng, K, N)
_drift = lambda rng: walks.drift_walk(rng, K, N)
_spiral_data = lambda rng: walks.spiral_trajectory(rng, K, N, 2.5)
_rw_layers = lambda rng: walks.random_walk_layers(rng, K_LAYERS, N_LAYERS, N)
_iid_layers = lambda rng: walks.iid_layers(rng, K_LAYERS, N_LAYERS, N)
_line_layers = lambda rng: walks.line_layers(rng, K_LAYERS, N_LAYERS, N)

ORDER = "order_test (permutation over pairs of runs)"
SPIRAL = "spiral_test PCA, sign-flip null"
WALK = "thread_test, beyond a random walk across layers"
CASES: tuple[Case, ...] = (
    Case("order-same-4v4", ORDER, "false positive", "4 vs 4 pairs, KLs from one lognormal (CV 17%)",
         _order(4, 4, False), 0.10, 100, 1000),
    Case("order-same-5v5", ORDER, "false positive", "5 vs 5 pairs from one distribution", _order(5, 5, False),
         0.10, 60, 1000),
    Case("order-3v2", ORDER, "false positive", "3 vs 2 pairs from one distribution (smallest p 0.1)",
         _order(3, 2, False), 0.0, 40, 300),
    Case("order-two-4v4", ORDER, "power", "4 vs 4 pairs, means 1 vs 2 (CV 17%)", _order(4, 4, True), 0.8, 60,
         1000),
    Case("order-texts-only-4v4", "bootstrap_order (texts only, runs fixed)", "reference",
         "4 vs 4 pairs from one distribution, 256 texts", _text_bootstrap(4, 4), None, 0, 300),
    Case("paired-same", "paired_order_test (sign flip within 6 runs)", "false positive",
         "6 runs, both values from one distribution, run effects CV 30%", _paired(0.0), 0.10, 100, 1000),
    Case("paired-two", "paired_order_test (sign flip within 6 runs)", "power",
         "6 runs, the larger value 2x the smaller on average", _paired(1.0), 0.8, 60, 1000),
    Case("kl-bca-normal", "bootstrap_kl BCa 95%", "coverage", "256 texts, normal differences", _coverage("normal"),
         0.93, 150, 2000),
    Case("kl-bca-t5", "bootstrap_kl BCa 95%", "coverage", "256 texts, t5 differences", _coverage("t5"), 0.88, 150,
         2000),
    Case("kl-bca-t3", "bootstrap_kl BCa 95%", "reference", "256 texts, t3 differences", _coverage("t3"), None, 0,
         2000),
    Case("exponent-same", "bootstrap_exponent_order (blocks of 10 starts)", "false positive",
         "two walks of one process (exponent 1), 50 overlapping windows", _exponents(1.0, 1.0), 0.10, 40, 300),
    Case("exponent-different", "bootstrap_exponent_order (blocks of 10 starts)", "power",
         "exponents 0.5 vs 1.0", _exponents(0.5, 1.0), 0.8, 40, 200),
    Case("spiral-isotropic", SPIRAL, "false positive", f"isotropic walk, K={K}, N={N}", _spiral(_iso), 0.10, 40,
         300),
    Case("spiral-isotropic-either", "spiral_test PCA, sign-flip null, either direction", "false positive",
         "isotropic walk: any verdict but 'not distinguishable'", _spiral(_iso, any_verdict=True), 0.10, 40, 300),
    Case("spiral-aniso-1", SPIRAL, "false positive", "anisotropic walk, eigenvalues ~1/k", _spiral(_aniso1),
         0.10, 40, 300),
    Case("spiral-aniso-2", SPIRAL, "false positive", "anisotropic walk, eigenvalues ~1/k^2", _spiral(_aniso2),
         0.10, 40, 300),
    Case("spiral-transient", SPIRAL, "false positive", "walk with an early transient", _spiral(_transient), 0.10,
         40, 300),
    Case("spiral-drift", SPIRAL, "false positive", "walk with drift", _spiral(_drift), 0.10, 40, 300),
    Case("spiral-clean", SPIRAL, "power", "2.5-turn spiral in a plane, plus noise", _spiral(_spiral_data), 0.8, 40,
         300),
    Case("spiral-gaussian-aniso-2", "spiral_test PCA, isotropic Gaussian null (the old one)", "reference",
         "anisotropic walk, eigenvalues ~1/k^2", _spiral(_aniso2, "gaussian"), None, 0, 200),
    Case("spiral-gaussian-transient", "spiral_test PCA, isotropic Gaussian null (the old one)", "reference",
         "walk with an early transient", _spiral(_transient, "gaussian"), None, 0, 200),
    Case("spiral-tsne-isotropic", "spiral_test t-SNE, sign-flip null", "false positive", "isotropic walk",
         _spiral(_iso, method="tsne", n_null=24), 0.10, 0, 20),
    Case("spiral-tsne-aniso-1", "spiral_test t-SNE, sign-flip null", "false positive",
         "anisotropic walk, eigenvalues ~1/k", _spiral(_aniso1, method="tsne", n_null=24), 0.10, 0, 20),
    Case("spiral-tsne-transient", "spiral_test t-SNE, sign-flip null", "false positive",
         "walk with an early transient, every snapshot tested", _spiral(_transient, method="tsne", n_null=24),
         0.10, 0, 20),
    Case("spiral-tsne-transient-warmup", "spiral_test t-SNE, sign-flip null, warm-up left out (as analyze does)",
         "false positive", "walk with an early transient; the first 20% of snapshots left out",
         _spiral(_transient, method="tsne", n_null=24, warmup=K // 5), 0.10, 0, 20),
    Case("spiral-tsne-clean", "spiral_test t-SNE, sign-flip null", "power", "2.5-turn spiral",
         _spiral(_spiral_data, method="tsne", n_null=24), 0.8, 0, 20),
    Case("threads-walk-rw", WALK, "false positive", f"random-walk layers ({N_LAYERS} states, {K_LAYERS} snapshots)",
         _threads(_rw_layers, "walk_p_less"), 0.10, 40, 300),
    Case("threads-walk-iid", WALK, "false positive", "i.i.d. layers", _threads(_iid_layers, "walk_p_less"), 0.10,
         40, 300),
    Case("threads-walk-line", WALK, "power", "layers on a line, plus noise", _threads(_line_layers, "walk_p_less"),
         0.8, 40, 300),
    Case("threads-order-rw", "thread_test, layer order (shuffled orders)", "reference",
         "random-walk layers: order matters by construction", _threads(_rw_layers, "order_p"), None, 0, 200),
)


def run_case(case: Case, reps: int, seed: int = 0) -> float:
    """Returns the share of `reps` seeded replicates in which the case's test fired (or covered)."""
    hits = [case.fn(np.random.default_rng([seed, r])) for r in range(reps)]
    return float(np.mean(hits))


def passes(case: Case, rate: float) -> bool | None:
    """True when the rate meets the case's limit (None for reference cases)."""
    if case.limit is None:
        return None
    return rate <= case.limit if case.kind == "false positive" else rate >= case.limit
