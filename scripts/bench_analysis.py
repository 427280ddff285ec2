"""Benchmark: KL matrix + PCA map against one (K, N) x (N, K) matrix product, side by side in one run.

    python scripts/bench_analysis.py [--k 2000] [--n 10000] [--repeats 3]

Prints the best-of-repeats time of each part and the ratios to Q @ Q.T (goal: kl_matrix + PCA <= 2x):
  - PCA from the KL matrix (classical_mds(kl) == PCA of Q; what analyze() does);
  - PCA standalone, embed(ll, "pca"), which builds its own Gram matrix.
Also prints the cost of kl_matrix(..., return_se=True), and of one spiral-null random walk (K points in N - 1
dimensions, PCA of its Gram matrix) drawn through the Bartlett factor (what spiral_test does) against drawing its
(K-1, N-1) Gaussian increments directly, and of a 1000-resample paired text bootstrap of one KL. On a machine shared with other jobs, compare runs with
OPENBLAS_NUM_THREADS=1 too: contended BLAS threads slow small LAPACK calls far more than Q @ Q.T.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_info

from trajlab import analysis as ta


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2000, help="models / checkpoints (rows)")
    parser.add_argument("--n", type=int, default=10000, help="texts (columns)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # LL-like: per-text difficulty plus a random-walk trajectory
    ll = -700 + 100 * rng.normal(size=args.n) + np.cumsum(rng.normal(size=(args.k, args.n)), axis=0)
    n_bytes = rng.integers(257, 1025, size=args.n)
    q = ta.double_center(ll)

    t_ref = best_time(lambda: q @ q.T, args.repeats)
    t_kl = best_time(lambda: ta.kl_matrix(ll, n_bytes), args.repeats)
    kl = ta.kl_matrix(ll, n_bytes)
    t_mds = best_time(lambda: ta.classical_mds(kl, 2), args.repeats)
    t_pca = best_time(lambda: ta.embed(ll, "pca", 2, n_bytes), args.repeats)
    t_se = best_time(lambda: ta.kl_matrix(ll, n_bytes, return_se=True), 1)
    threads = {p["internal_api"]: p["num_threads"] for p in threadpool_info()}
    print(f"K={args.k} N={args.n}, best of {args.repeats}, BLAS threads {threads}")
    rows = [
        ("Q @ Q.T", t_ref, ""),
        ("kl_matrix", t_kl, f"({t_kl / t_ref:.2f}x)"),
        ("PCA from KL (classical_mds)", t_mds, f"({t_mds / t_ref:.2f}x)"),
        ("embed(ll, 'pca')", t_pca, f"({t_pca / t_ref:.2f}x)"),
        ("kl_matrix + PCA from KL", t_kl + t_mds, f"ratio {(t_kl + t_mds) / t_ref:.2f}x (goal <= 2)"),
        ("kl_matrix + embed pca", t_kl + t_pca, f"ratio {(t_kl + t_pca) / t_ref:.2f}x (standalone PCA)"),
        ("kl_matrix(return_se=True)", t_se, f"({t_se / t_ref:.2f}x, one run)"),
    ]
    for name, t, note in rows:
        print(f"  {name:<30}{t:8.3f} s   {note}")
    bench_nulls(ll, n_bytes, args.repeats)


def bench_nulls(ll: np.ndarray, n_bytes: np.ndarray, repeats: int) -> None:
    from trajlab.analysis.calibrate import _pca2, random_walk_points

    k, n = ll.shape
    sizes = np.ones(k - 1)
    rng = np.random.default_rng(1)

    def direct() -> np.ndarray:
        steps = rng.standard_normal((k - 1, n - 1)) / np.sqrt(n - 1)
        return _pca2(np.vstack([np.zeros((1, n - 1)), np.cumsum(steps, axis=0)]))

    t_bartlett = best_time(lambda: _pca2(random_walk_points(sizes, n - 1, rng)), repeats)
    t_direct = best_time(direct, repeats)
    t_boot = best_time(lambda: ta.bootstrap_kl(ll[0], ll[1], n_bytes, 1000), repeats)
    print(f"spiral null, one walk + PCA (K={k}, N={n}):")
    print(f"  {'direct (K-1, N-1) increments':<30}{t_direct:8.3f} s")
    print(f"  {'Bartlett factor (K-1, K-1)':<30}{t_bartlett:8.3f} s   ({t_direct / t_bartlett:.1f}x faster)")
    print(f"  {'bootstrap_kl, 1000 resamples':<30}{t_boot:8.3f} s")


if __name__ == "__main__":
    main()
