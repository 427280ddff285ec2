"""The record stage: the Lightning callback that snapshots a training run into a store.

Modules: ``callback`` (TrajectoryCallback), ``schedule`` (which optimizer steps), ``probes`` (which probe and which
parent store), ``settings`` (settings checks, store meta, logged numbers), ``ranks`` (DDP shares), ``writer``
(training state kept, the background writer).
"""

from trajlab.record.callback import TrajectoryCallback

__all__ = ["TrajectoryCallback"]
