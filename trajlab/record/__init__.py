"""The record stage: the Lightning callback that snapshots a training run into a store.

Modules: ``callback`` (TrajectoryCallback), ``settings`` (RecordConfig: what is recorded, checked up front; the
store's meta; the resume check), ``schedule`` (which optimizer steps), ``probes`` (which probe and which parent
store), ``live`` (the numbers and the map logged per snapshot), ``ranks`` (DDP shares), ``writer`` (training state
kept, the background writer).

Resume (``fit(ckpt_path=...)``): the store is reopened, never rewritten. Every checkpoint first waits until the
queued snapshots are on disk, so the store holds every snapshot the checkpoint's state names. Snapshots taken
after the checkpoint and before a crash are already stored when the resumed run replays those steps; the callback
then scores them again, compares the last-layer LL with the stored row, keeps the stored snapshot and adds a
``replay`` note {"step", "max_abs_diff"} (0.0 on CPU, where a resumed run is bitwise equal; a warning otherwise).

DDP: every rank scores its share of the probe texts (text i on rank i mod world_size); the shares are all-gathered
and each text index is checked to occur exactly once. Only rank zero holds the store and logs. Weights are read
from the scored module as each rank holds it (full parameters under DDP; sharded strategies are not supported).
"""

from trajlab.record.callback import TrajectoryCallback
from trajlab.record.settings import RecordConfig

__all__ = ["RecordConfig", "TrajectoryCallback"]
