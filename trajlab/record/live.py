"""What a TrajectoryCallback shows while the run trains: the numbers it logs per snapshot (KL through
trajlab.analysis, the one estimate) and the PCA map of the trajectory so far, saved and logged as an image."""

from __future__ import annotations

import numpy as np

from trajlab.analysis import embed, kl_paired
from trajlab.analysis.figures import map_figure

MAP_FILE = "trajectory_map.png"  # in the store folder


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
