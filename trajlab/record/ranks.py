"""Running a snapshot under DDP: work on rank zero with errors raised on every rank, and the probe scored in
shares (each text on one rank) assembled with each text index checked to occur exactly once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def on_rank_zero(trainer: Any, what: str, fn: Callable, *args):
    """fn(*args) on rank zero; its error is raised there and, under DDP, on every other rank as well (so
    none waits in a collective for a rank that stopped). Returns fn's result (None elsewhere)."""
    result, error = None, None
    if trainer.is_global_zero:
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001 - re-raised below
            error = e
    if trainer.world_size > 1:
        failed = trainer.strategy.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is None and failed:
            raise RuntimeError(f"TrajectoryCallback stopped: {what} failed on rank 0: {failed}")
    if error is not None:
        raise error
    return result


def assembled_shards(indices: np.ndarray, values: np.ndarray, n_texts: int) -> np.ndarray:
    """(R, N) scores from all-gathered shards: indices (W, M) text index per slot (-1: padding), values (W, R, M).

    Raises:
        RuntimeError: a text index that occurs twice, or a text no rank scored.
    """
    idx = indices.reshape(-1)
    vals = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)  # (R, W*M)
    keep = idx >= 0
    if (idx >= n_texts).any():
        raise RuntimeError(f"a rank scored text {int(idx.max())} of a probe of {n_texts} texts")
    counts = np.bincount(idx[keep], minlength=n_texts)
    if (counts != 1).any():
        bad = int(np.flatnonzero(counts != 1)[0])
        raise RuntimeError(
            f"probe text {bad} was scored {counts[bad]} times across ranks (expected exactly once)"
        )
    out = np.empty((values.shape[1], n_texts))
    out[:, idx[keep]] = vals[:, keep]
    return out


def scores_across_ranks(
    score: Callable[[list[str]], np.ndarray],
    texts: list[str],
    rank: int,
    world: int,
    strategy: Any,
    step: int,
) -> np.ndarray:
    """(R, N) scores of all texts, each scored on one rank: rank r scores texts r, r + world, ...

    Every rank calls this with the same arguments but its rank; the shares are all-gathered with the Lightning
    strategy's ``all_gather`` (on its ``root_device``) and each text index is checked to occur exactly once. A
    failure on any rank raises on every rank, naming the step, so no rank is left waiting in a collective.
    """
    all_gather, device = strategy.all_gather, strategy.root_device
    mine = np.arange(rank, len(texts), world)
    local, error = None, None
    try:
        local = score([texts[i] for i in mine])  # (R, len(mine))
    except Exception as e:  # noqa: BLE001 - re-raised below, after every rank has learnt of it
        error = e
    if world > 1:
        failed = all_gather(torch.tensor([int(error is not None)], device=device)).reshape(-1).cpu()
        if error is None and failed.any():
            ranks = failed.nonzero().reshape(-1).tolist()
            raise RuntimeError(f"trajectory snapshot at step {step}: scoring failed on rank(s) {ranks}")
    if error is not None:
        where = f" (text indices count within rank {rank}'s share {rank}::{world})" if world > 1 else ""
        kind = ValueError if isinstance(error, ValueError) else RuntimeError
        raise kind(f"trajectory snapshot at step {step}: {error}{where}") from error
    if world == 1:
        return local
    m = -(-len(texts) // world)  # the largest share; smaller ones are padded with index -1
    ids = torch.full((m,), -1, dtype=torch.int64)
    ids[: len(mine)] = torch.from_numpy(mine)
    vals = torch.zeros((len(local), m), dtype=torch.float64)
    vals[:, : len(mine)] = torch.from_numpy(local)
    gathered = [all_gather(t.to(device)).cpu().numpy() for t in (ids, vals)]  # (W, M), (W, R, M)
    return assembled_shards(*gathered, len(texts))
