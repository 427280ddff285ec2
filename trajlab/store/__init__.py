"""The store stage: one trajectory on disk (`TrajectoryStore`), its meta schema, crash-safe files, merging.

Modules: ``trajectory`` (TrajectoryStore: read, append, verify), ``meta`` (the format-2 meta schema, the one place
that knows every key, and the defaults a format-1 store is read with), ``files`` (atomic snapshot files and the
manifest), ``merge`` (shards of one trajectory into one store).
"""

from trajlab.store.merge import merge_stores
from trajlab.store.trajectory import (
    FORMAT,
    FORMAT_VERSION,
    META_SCHEMA,
    SCORING_SCHEMA,
    MissingEntryError,
    TrajectoryStore,
    check_comparable,
    is_store,
    open_stores,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "META_SCHEMA", "SCORING_SCHEMA", "MissingEntryError",
           "TrajectoryStore", "check_comparable", "is_store", "merge_stores", "open_stores"]  # fmt: skip
