"""Which probe a TrajectoryCallback scores and which parent store it continues (lineage), checked for
comparability with that parent."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from trajlab.data.probe import ProbeSet
from trajlab.store import TrajectoryStore, check_comparable, is_store


def resolve_probe(
    probe: ProbeSet | str | None,
    datamodule: Any = None,
    init_from: str | None = None,
    n_texts: int | None = None,
) -> tuple[ProbeSet, dict | None]:
    """The ProbeSet a `TrajectoryCallback` scores, and the parent run ({"run", "step", "store"}) for "parent".

    Args:
        probe: a ProbeSet; None for the data module's held-out ``probe_texts``; "default" for
            ``ProbeSet.default()``; "parent" for the probe of the store beside the model being fine-tuned
            (``<init_from>/../trajectory``, the layout of a trajlab run folder: ``<run>/hf`` beside
            ``<run>/trajectory``), or, for a run that is no fine-tune (or whose parent has no store: with a
            warning), the data module's held-out probe; a store folder (or "store:PATH") for that store's
            probe; or a probe JSON file (`ProbeSet.from_json`: a list of texts such as the paper's
            data/texts.json, a list of {"text", "domain"} objects, or a file written by ProbeSet.to_json /
            save, e.g. by `trajlab probe build`).
        datamodule: where probe=None finds ``probe_texts`` (and ``hparams.corpus`` for the name).
        init_from: the folder the fine-tuned model was loaded from, for probe="parent".
        n_texts: keep the first n_texts of the data module's held-out probe (refused with any other probe).
    """
    if n_texts is not None and probe is not None and (probe != "parent" or init_from):
        raise ValueError(
            f"n_texts={n_texts} cuts only the data module's held-out probe, not probe={str(probe)!r}: pass a "
            "probe of the size you want (ProbeSet.subset) and n_texts=None"
        )
    if isinstance(probe, ProbeSet):
        return probe, None
    if probe is None:
        dm = datamodule
        texts = getattr(dm, "probe_texts", None)
        if not texts:
            raise ValueError(
                f"no probe given and {type(dm).__name__} has no held-out probe_texts: pass probe='default', a "
                "ProbeSet, a ProbeSet file or a trajectory store folder"
            )
        corpus = getattr(getattr(dm, "hparams", None), "corpus", None) or type(dm).__name__
        texts = texts[:n_texts] if n_texts else texts
        domains = (getattr(dm, "probe_domains", None) or None) and dm.probe_domains[: len(texts)]
        name = "+".join(map(str, corpus)) if isinstance(corpus, dict) else Path(str(corpus)).name  # a mixture
        return ProbeSet(texts, name=f"{name}-heldout-{len(texts)}", domains=domains), None
    if probe == "default":
        return ProbeSet.default(), None
    if probe == "parent":
        path = Path(init_from or ".").parent / "trajectory"
        if init_from and is_store(path):
            return _store_probe(path, parent=True)
        if init_from:
            warnings.warn(
                f"probe='parent': no trajectory store beside model.init_from ({path}); scoring the data module's "
                "held-out probe, so this run's KL to its parent cannot be measured",
                stacklevel=2,
            )
        return resolve_probe(None, datamodule, n_texts=n_texts)
    path = Path(str(probe).removeprefix("store:"))
    if path.is_dir():
        return _store_probe(path, parent=False)
    if path.is_file():
        return ProbeSet.load(path), None
    raise FileNotFoundError(
        f"probe {probe!r}: no such store folder or probe file; use None, 'default', 'parent', a ProbeSet, a "
        "trajectory store folder or a probe JSON file (a list of texts, or written by ProbeSet.to_json / save)"
    )


def _store_probe(path: Path, parent: bool) -> tuple[ProbeSet, dict | None]:
    with TrajectoryStore.open(path) as store:
        stored = store.probe()
        steps = store.steps
        info = {
            "run": store.meta.get("run"),
            "step": int(steps[-1]) if len(steps) else None,
            "store": str(path),
        }
    return stored, info if parent else None


def parent_lineage(
    spec: str | os.PathLike, probe_fingerprint: str, long_texts: str, label: str
) -> tuple[dict, dict, dict]:
    """Lineage of a run that continues from a parent store's snapshot, checked for comparability.

    Args:
        spec: the parent store folder, "PATH@STEP" for its snapshot at STEP (default: its last snapshot).
        probe_fingerprint, long_texts: what this run scores and how, for `check_comparable`.
        label: names this run in its message.

    Returns:
        (meta["lineage"]: the parent's root and {"id", "step"}, meta["parent"]: {"run", "step", "store"}, the
        parent store's meta).

    Raises:
        ValueError: the parent truncated long texts and this run scores whole texts (or the reverse), or it
            holds no such step.
    """
    path, at, step = str(spec).rpartition("@")
    if not at or not step.isdigit():
        path, step = str(spec), None
    with TrajectoryStore.open(path) as store:
        meta = store.meta
        this = {"probe_fingerprint": probe_fingerprint, "scoring": {"long_texts": long_texts}}
        check_comparable([store, (label, this)])
        lineage = store.lineage_of_child(None if step is None else int(step))
    parent = {"run": meta.get("run"), "step": lineage["parent"]["step"], "store": str(path)}
    return lineage, parent, meta
