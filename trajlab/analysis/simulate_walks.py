"""Seeded LL-like trajectories and layer stacks with and without the effects the map and layer tests look for.

Used to calibrate spiral_test and thread_test (false-positive rate on data without the effect, power on data
with it). Every generator returns LL-like numbers: a shared per-text difficulty (-300 + 20 z, nats per text)
plus the simulated positions, so the tests' double-centring has something to remove.

Trajectories, (rng, K, N, ...) -> (K, N), no spiral in any but the last:
    isotropic_walk, anisotropic_walk (increment covariance eigenvalues ~ k^-power), transient_walk (an early
    fast move in one direction), drift_walk (a constant direction added to every step), spiral_trajectory
    (2-3 turns in a plane that holds the top PCs, plus noise).
Layer stacks, (rng, K, n_layers, N, ...) -> (K, n_layers, N), one path of layer states per snapshot:
    iid_layers (no order), random_walk_layers (order, no straightness), line_layers (a thread: layers on a line).
"""

from __future__ import annotations

import numpy as np


def _difficulty(rng: np.random.Generator, n: int) -> np.ndarray:
    """(N,) per-text LL shared by every snapshot: double-centring removes it."""
    return -300.0 + 20.0 * rng.standard_normal(n)


def cosine_step_sizes(k: int) -> np.ndarray:
    """Returns (K-1,) relative step sizes that follow a cosine learning-rate decay from 1 to 0.1."""
    return 0.1 + 0.45 * (1.0 + np.cos(np.pi * np.arange(k - 1) / max(k - 1, 1)))


def _walk(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    """Returns (K, N) LL-like rows whose consecutive differences are the (K-1, N) steps."""
    n = steps.shape[1]
    return _difficulty(rng, n) + np.vstack([np.zeros(n), np.cumsum(steps, axis=0)])


def isotropic_walk(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """Isotropic Gaussian random walk in text space, step sizes on a cosine schedule (null: no spiral)."""
    return _walk(rng, cosine_step_sizes(k)[:, None] * rng.standard_normal((k - 1, n)))


def anisotropic_walk(rng: np.random.Generator, k: int, n: int, power: float = 1.0) -> np.ndarray:
    """Anisotropic random walk: increment covariance eigenvalues proportional to 1 / j^power, j = 1..N.

    The eigenvectors are the text axes in a random order (a few texts carry most of each step; power 1: the
    top 10 of 256 carry half the variance, power 2: the top one 60%). Symmetric, independent steps: no
    systematic rotation (null: no spiral), but far from an isotropic walk.
    """
    scale = rng.permutation(np.arange(1, n + 1, dtype=np.float64) ** (-power / 2))
    scale *= np.sqrt(n) / np.linalg.norm(scale)  # same mean squared step length as the isotropic walk
    return _walk(rng, cosine_step_sizes(k)[:, None] * scale * rng.standard_normal((k - 1, n)))


def transient_walk(
    rng: np.random.Generator, k: int, n: int, fraction: float = 0.2, size: float = 3.0
) -> np.ndarray:
    """Random walk with an early transient: a fast exponential move along one direction, then a plain walk.

    The transient covers about `fraction` of the snapshots (decay time fraction * K / 3) and travels `size`
    times the walk's overall displacement, as early training moves far before settling (null: no spiral).
    """
    walk = isotropic_walk(rng, k, n)
    direction = rng.standard_normal(n)
    reach = size * np.linalg.norm(walk[-1] - walk[0]) / np.linalg.norm(direction)
    tau = max(fraction * k / 3.0, 1e-9)
    return walk + reach * (1.0 - np.exp(-np.arange(k) / tau))[:, None] * direction


def drift_walk(rng: np.random.Generator, k: int, n: int, drift: float = 0.5) -> np.ndarray:
    """Random walk whose every step adds a constant direction of `drift` times the typical step length.

    Drifting walks are straighter than random walks and wind less (null: no spiral; a one-sided test that
    asks "winds more" must not fire).
    """
    sizes = cosine_step_sizes(k)[:, None]
    direction = rng.standard_normal(n)
    direction *= drift * np.sqrt(n) / np.linalg.norm(direction)
    return _walk(rng, sizes * (rng.standard_normal((k - 1, n)) + direction))


def spiral_trajectory(
    rng: np.random.Generator, k: int, n: int, turns: float = 2.5, noise: float = 0.1
) -> np.ndarray:
    """A clean spiral: an Archimedean spiral of `turns` turns on a random plane of text space, plus noise.

    The radius grows from 0.5 to 0.5 + 2 pi turns (in units of sqrt(N) per text-space axis); every snapshot
    gets independent isotropic noise of `noise` times the mean consecutive spiral step, so the plane of the
    spiral holds the top two PCs (the effect the spiral test must find).
    """
    theta = np.linspace(0.5, 0.5 + 2 * np.pi * turns, k)
    xy = np.column_stack([theta * np.cos(theta), theta * np.sin(theta)])  # (K, 2)
    plane = np.linalg.qr(rng.standard_normal((n, 2)))[0].T * np.sqrt(n)  # (2, N) orthogonal, norm sqrt(N)
    path = xy @ plane
    step = np.linalg.norm(np.diff(path, axis=0), axis=1).mean()
    return _difficulty(rng, n) + path + noise * step / np.sqrt(n) * rng.standard_normal((k, n))


def iid_layers(rng: np.random.Generator, k: int, n_layers: int, n: int) -> np.ndarray:
    """Independent layer states: every layer of every snapshot an independent point (no order, no thread)."""
    return _difficulty(rng, n) + rng.standard_normal((k, n_layers, n))


def random_walk_layers(rng: np.random.Generator, k: int, n_layers: int, n: int) -> np.ndarray:
    """Each snapshot's layers along its own isotropic Gaussian random walk with unequal step sizes.

    Layer order matters (adjacent layers are close) but the path is no straighter than a random walk of its
    steps (null of the walk test).
    """
    sizes = rng.uniform(0.5, 1.5, size=(1, n_layers - 1, 1))  # step sizes shared by the snapshots
    steps = sizes * rng.standard_normal((k, n_layers - 1, n))
    pos = np.concatenate([np.zeros((k, 1, n)), np.cumsum(steps, axis=1)], axis=1)
    return _difficulty(rng, n) + pos


def line_layers(rng: np.random.Generator, k: int, n_layers: int, n: int, noise: float = 0.1) -> np.ndarray:
    """Each snapshot's layers on a straight line (unequal spacing), plus isotropic noise of `noise` x step.

    The thread effect: straighter than any random walk with the same steps.
    """
    spacing = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 1.5, size=n_layers - 1))])  # (n_layers,)
    direction = rng.standard_normal((k, 1, n))  # one line per snapshot, unit step ~ 1 per text
    pos = spacing[None, :, None] * direction
    return _difficulty(rng, n) + pos + noise * rng.standard_normal((k, n_layers, n))
