"""The hub stage: public checkpoints into stores.

Modules: ``revisions`` (Pythia's revision names and steps), ``checkpoints`` (finding, downloading, hashing and
loading one revision), ``config`` (ImportConfig: every import option), ``serial`` (the in-process import of a
list of revisions), ``importer`` (import_checkpoints and the ``trajlab import`` command), ``ray_executor``
(shards as Ray tasks, each a serial import), ``dryrun`` (cost estimate), ``quirks`` (documented defects of
published checkpoints, data in quirks.json), ``cards`` (lineage from a model card's base_model), ``quantize``
(``trajlab quantize``: GGUF quantize + dequantize with the gguf package, scored beside the parent).
"""

from trajlab.hub.config import ImportConfig, ImportResult
from trajlab.hub.importer import import_checkpoints

__all__ = ["ImportConfig", "ImportResult", "import_checkpoints"]
