"""What a TrajectoryCallback records besides the scores: its settings checked up front, the store's meta, and
the numbers and map logged per snapshot (from trajlab.analysis, the one KL estimate)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajlab.analysis import embed, kl_paired
from trajlab.analysis.figures import map_figure
from trajlab.store.meta import LONG_TEXTS, model_meta
from trajlab.data.tokenizer import tokenizer_meta

MAP_FILE = "trajectory_map.png"  # in the store folder
# What the store's meta["config"]["callback"] records.
SETTINGS = (
    "probe", "n_texts", "schedule", "layers", "weights", "final", "full_every", "sketch_k", "window",
    "long_texts", "stride", "lens_dtype", "layers_every", "parent",
)  # fmt: skip


def check_settings(
    layers: str,
    weights: str,
    long_texts: str,
    layers_every: int,
    full_every: int,
    window: int,
    batch_size: int,
    queue_size: int,
    n_texts: int | None,
    map_every: int,
) -> None:
    """Refuse, in one line, a TrajectoryCallback setting that cannot work (before any training)."""
    if layers not in ("all", "last"):
        raise ValueError(f"layers must be 'all' or 'last', got {layers!r}")
    if long_texts not in LONG_TEXTS:
        raise ValueError(f"long_texts must be one of {LONG_TEXTS}, got {long_texts!r}")
    if isinstance(layers_every, bool) or not isinstance(layers_every, int) or layers_every < 1:
        raise ValueError(
            f"layers_every must be an int >= 1 (1: every layer at every snapshot), got {layers_every!r}"
        )
    if layers_every > 1 and layers == "last":
        raise ValueError(
            f"layers_every={layers_every} needs layers='all' (with 'last' no lens layer is scored)"
        )
    if weights not in ("sketch", "full", "none"):
        raise ValueError(f"weights must be 'sketch', 'full' or 'none', got {weights!r}")
    if min(full_every, window, batch_size, queue_size, n_texts or 2) < 1 or map_every < 0 or n_texts == 1:
        raise ValueError(
            "full_every, window, batch_size and queue_size must be >= 1, n_texts >= 2 (KL needs "
            "two texts), map_every >= 0"
        )


def store_meta(
    run: str,
    pl_module: Any,
    model: Any,
    tokenizer: Any,
    settings: dict,
    parent: dict | None,
    *,
    max_steps: int | None = None,
    lineage: dict | None = None,
) -> dict:
    """The meta.json of a callback's store: run, model, tokenizer, settings and hyper-parameters, seed, parent,
    lineage, warmup_steps (the module's hparams["warmup_steps"], when it has one) and max_steps.

    A trajlab LitLM describes its model and tokenizer itself (``run_meta``); any other module gets the model's
    class (and transformers config) and the tokenizer's fingerprint. The scoring block is added by the caller
    once the first snapshot is scored.
    """
    meta = {"run": run, "tokenizer": tokenizer_meta(tokenizer)}
    if callable(getattr(pl_module, "run_meta", None)):
        meta |= pl_module.run_meta()
    name = meta.get("preset") or meta.get("init_from") or type(model).__name__
    meta["model"] = model_meta(model, name)
    meta["config"] = {"callback": settings, "hparams": dict(getattr(pl_module, "hparams", {}))}
    meta["n_params"] = sum(
        p.numel() for p in (model if isinstance(model, torch.nn.Module) else pl_module).parameters()
    )
    if "PL_GLOBAL_SEED" in os.environ:
        meta["seed"] = int(os.environ["PL_GLOBAL_SEED"])
    if parent:
        meta["parent"] = parent
    warmup = dict(getattr(pl_module, "hparams", {})).get("warmup_steps")
    meta["warmup_steps"] = warmup if isinstance(warmup, int) and not isinstance(warmup, bool) else None
    meta["max_steps"] = max_steps
    if lineage:
        meta["lineage"] = lineage
    return json.loads(json.dumps(meta, default=str))  # tuples, dtypes, paths: JSON values


def snapshot_metrics(
    ll: np.ndarray, earlier: list[np.ndarray], n_bytes: np.ndarray, sq_dists: dict[int, float]
) -> dict[str, float]:
    """Logged numbers of one snapshot: KL to the first and previous snapshot (bits/byte and nats), between
    adjacent lens layers (bits/byte) and the weight distance to the previous snapshot.

    Args:
        ll: (R, N) this snapshot's LL rows; the last row is the model's output.
        earlier: [] or [first, previous] (N,) last-layer LL of earlier snapshots.
        n_bytes: (N,) UTF-8 bytes per probe text.
        sq_dists: {earlier step: exact squared weight distance}.
    """
    out = {}
    for name, ref in zip(("first", "prev"), earlier):
        out[f"traj/kl_{name}"] = float(kl_paired(ref, ll[-1], n_bytes)[0])
        out[f"traj/kl_{name}_nats"] = float(kl_paired(ref, ll[-1])[0])
    if len(ll) > 1:
        for layer, kl in enumerate(kl_paired(ll[:-1], ll[1:], n_bytes), start=1):
            out[f"traj/kl_layer_{layer}"] = float(kl)  # KL(layer - 1, layer)
    if sq_dists:
        out["traj/w_dist_prev"] = float(np.sqrt(sq_dists[max(sq_dists)]))
    return out


def trajectory_map(rows: list[tuple[int, np.ndarray]], n_bytes: np.ndarray, title: str, loggers: list = ()):
    """PCA map (KL units, bits/byte) of the (step, (N,) last-layer LL) rows, K >= 3; line width: consecutive KL.
    Also logged as an image to the TensorBoard / wandb loggers among `loggers`."""
    steps, ll = np.array([s for s, _ in rows]), np.stack([r for _, r in rows])
    fig = map_figure(
        {"PCA": embed(ll, "pca", 2, n_bytes)}, steps, kl_paired(ll[:-1], ll[1:], n_bytes), title
    )
    log_map_image(list(loggers), fig, steps[-1])
    return fig


def log_map_image(loggers: list, fig, step: int) -> None:
    """Log the trajectory map figure as an image to the TensorBoard and wandb loggers among `loggers`."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    image_loggers = [lg for lg in loggers if isinstance(lg, TensorBoardLogger | WandbLogger)]
    if not image_loggers:
        return
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
    for lg in image_loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.experiment.add_image("traj/map", image, global_step=step, dataformats="HWC")
        else:
            lg.log_image("traj/map", [image], step=step)


def checked_resume(path, restored: dict | None, steps: list[int], order: list[int], start: int) -> dict | None:
    """The checkpoint's callback state when it names this store (else None), checked against the stored steps;
    warns about scheduled steps before the resume step that the store lacks.

    Raises:
        ValueError: the checkpoint names steps the store does not hold (a replaced or damaged store).
    """
    restored = restored if (restored or {}).get("out_dir") == str(Path(path).resolve()) else None
    if restored and (missing := sorted(set(restored["steps"]) - set(steps))):
        raise ValueError(
            f"{path} lacks steps {missing[:5]} that the checkpoint says were recorded: the "
            "store was replaced or damaged; resume into the original store or a new out_dir"
        )
    if gaps := [s for s in order if s < start and s not in steps]:
        warnings.warn(
            f"{path}: scheduled steps {gaps[:5]}{'...' if len(gaps) > 5 else ''} before the "
            f"resume step {start} are not in the store and will stay missing",
            stacklevel=3,
        )
    return restored
