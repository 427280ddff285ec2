"""A store's meta.json: the schema (format version 2), version-1 defaults, lineage, comparability of scorings.

`META_SCHEMA` and `SCORING_SCHEMA` below are the one written-down description of every key; `new_meta` builds
the meta of a new store from them and `read_meta` fills a stored one, so `TrajectoryStore.meta` always holds
every key of `META_SCHEMA` whichever version wrote it.

Version 1 (stores written before scoring, lineage and schedule keys existed) reads with these defaults:
``scoring`` = {"long_texts": "truncate", other keys null} (version-1 code truncated long texts at the
context), ``warmup_steps`` and ``max_steps`` null, ``id`` = "v1-" + the first 32 hex digits of
sha256(meta.json) (stable: the file never changes), ``lineage`` from the old ``parent`` {"run", "step",
"store"} when that folder still holds a store (its id and root, the old step), else the store's own root.
Version-1 stores open read-only: appending would add rows scored another way (whole texts) under meta that
says "truncate"; write new snapshots to a new store.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from trajlab import __version__
from trajlab.scoring_config import LONG_TEXTS

FORMAT, FORMAT_VERSION = "trajlab-store", 2
READABLE_VERSIONS = (1, 2)
_NONE = type(None)

# Every key of meta.json: name -> (allowed JSON types, meaning). Any other key is the writer's own extra.
META_SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((str,), '"trajlab-store"'),
    "format_version": ((int,), "2 (1: read with the defaults in this module's docstring)"),
    "id": ((str,), "uuid4 hex made at create, unless the writer's meta gives one"),
    "lineage": ((dict,), '{"root": id of the first ancestor, "parent": {"id": str, "step": int} | null}'),
    "n_layers": ((int,), "transformer blocks L; LL rows are layers 0..L"),
    "n_texts": ((int,), "probe texts N"),
    "probe_fingerprint": ((str,), "sha256 of the probe texts (trajlab.data.probe)"),
    "trajlab_version": ((str,), "trajlab version that created the store"),
    "run": ((str,), "run name (writer's)"),
    "model": ((dict,), '{"name": hub id, path or preset, "class": model class or null, "config": its config}' ),
    "tokenizer": ((dict,), 'what the tokenizer is, with a "fingerprint" (writer\'s)'),
    "config": ((dict,), "writer's settings (callback settings, hyper-parameters, import options)"),
    "warmup_steps": ((int, _NONE), "learning-rate warm-up steps of the run, null when unknown"),
    "max_steps": ((int, _NONE), "planned optimizer steps of the run, null when unknown"),
    "scoring": ((dict,), "how the LL rows were scored: SCORING_SCHEMA"),
}
# Optional keys writers add today (not checked): "seed", "preset", "n_params", "weights", "shard",
# "merged_from", and "parent" = {"run", "step", "store"} of a fine-tune (the version-1 way to name a parent).

# meta["scoring"]: trajlab.scoring_config.ScoringConfig.record (ScoreInfo.scoring()); all null = not recorded (a store created without it).
SCORING_SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "long_texts": (
        (str, _NONE),
        f"{' / '.join(LONG_TEXTS)}: what was done with texts longer than the window",
    ),
    "stride": ((int, _NONE), "sliding-window stride S in tokens (rolling)"),
    "window": ((int, _NONE), "window C in tokens: the model's context or max_length"),
    "n_tokens": ((list, _NONE), "[N ints] scored tokens per text (T - 1 when whole texts are scored)"),
    "lens_dtype": ((str, _NONE), 'dtype of the lens GEMMs, resolved ("float32", "bfloat16", ...)'),
}
MODEL_KEYS = ("name", "class", "config")  # meta["model"]: built by model_meta for every writer
REQUIRED_META = ("run", "model", "tokenizer", "config")  # the writer's keys; new_meta fixes the format and shapes
V1_SCORING = {"long_texts": "truncate", "stride": None, "window": None, "n_tokens": None, "lens_dtype": None}
_V1_PARENT_DEPTH = 8  # how far up a chain of version-1 parents lineage is followed


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is _NONE else t.__name__ for t in types)


def typed(value, types: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is no int (JSON true is not a step count)."""
    return not isinstance(value, bool) and isinstance(value, types)


def _check_types(block: Mapping, schema: Mapping, where: str) -> None:
    for key, (types, _) in schema.items():
        value = block.get(key)
        if not typed(value, types):
            raise ValueError(f"{where}[{key!r}] must be {_type_names(types)}, got {value!r}")


def _checked_scoring(scoring, n_texts: int) -> dict:
    if not isinstance(scoring, Mapping) or (extra := sorted(set(scoring) - set(SCORING_SCHEMA))):
        raise ValueError(
            f'meta["scoring"] must be a dict with keys {list(SCORING_SCHEMA)} (ScoreInfo.scoring()); '
            f"got {scoring if not isinstance(scoring, Mapping) else f'extra keys {extra}'}"
        )
    out = {k: scoring.get(k) for k in SCORING_SCHEMA}
    _check_types(out, SCORING_SCHEMA, 'meta["scoring"]')
    if out["long_texts"] not in (*LONG_TEXTS, None):
        raise ValueError(
            f'meta["scoring"]["long_texts"] must be one of {LONG_TEXTS}, got {out["long_texts"]!r}'
        )
    for key in ("stride", "window"):
        if out[key] is not None and out[key] < 1:
            raise ValueError(f'meta["scoring"][{key!r}] must be >= 1 tokens, got {out[key]}')
    n_tok = out["n_tokens"]
    if n_tok is not None and (len(n_tok) != n_texts or not all(typed(n, (int,)) and n >= 0 for n in n_tok)):
        raise ValueError(
            f'meta["scoring"]["n_tokens"] must list {n_texts} non-negative ints (one per probe text), '
            f"got {len(n_tok)} values"
        )
    return out


def _checked_lineage(lineage, own_id: str) -> dict:
    if lineage is None:
        return {"root": own_id, "parent": None}
    parent = lineage.get("parent") if isinstance(lineage, Mapping) else None
    ok = (
        isinstance(lineage, Mapping)
        and isinstance(lineage.get("root"), str)
        and lineage["root"]
        and (
            parent is None
            or (
                isinstance(parent, Mapping)
                and isinstance(parent.get("id"), str)
                and isinstance(parent.get("step"), int)
                and not isinstance(parent["step"], bool)
                and parent["step"] >= 0
            )
        )
    )
    if not ok:
        raise ValueError(
            f'meta["lineage"] must be {{"root": str, "parent": {{"id": str, "step": int >= 0}} or null}}, '
            f"got {lineage!r}"
        )
    return {
        "root": lineage["root"],
        "parent": None if parent is None else {"id": parent["id"], "step": parent["step"]},
    }


def model_meta(model, name: str) -> dict:
    """meta["model"] of any transformers model (anything with a ``config.to_json_string()``), for every writer."""
    cfg = getattr(model, "config", None)
    config = json.loads(cfg.to_json_string()) if hasattr(cfg, "to_json_string") else {}
    return {"name": str(name), "class": type(model).__name__, "config": config}


def _model_block(model, meta: Mapping) -> dict:
    """meta["model"] in the one shape of MODEL_KEYS, also from the shapes earlier writers used: a string (an
    importer's model name, its config under meta["config"]["model"]) or {"class", **config} (the callback's)."""
    if isinstance(model, str):
        config = (meta.get("config") or {}).get("model")
        return {"name": model, "class": None, "config": config if isinstance(config, dict) else {}}
    if isinstance(model, Mapping) and set(MODEL_KEYS) <= set(model):
        return dict(model)
    if isinstance(model, Mapping):
        config = dict(model)
        cls = config.pop("class", None)
        return {"name": str(meta.get("preset") or meta.get("init_from") or cls or "model"), "class": cls,
                "config": config}
    raise ValueError(f'meta["model"] must be a dict {{"name", "class", "config"}} (model_meta), got {model!r}')


def new_meta(meta: Mapping, n_texts: int, probe_fingerprint: str, n_layers: int) -> dict:
    """The meta.json of a new store: the writer's `meta` checked against META_SCHEMA, defaults filled in.

    Raises:
        ValueError: a missing writer key, a key of the wrong type, or a fixed key that disagrees with the
            store.
    """
    if not isinstance(meta, Mapping) or (missing := [k for k in REQUIRED_META if k not in meta]):
        raise ValueError(f"meta must be a dict with keys {list(REQUIRED_META)}; missing {missing}")
    if not isinstance(meta["tokenizer"], Mapping) or "fingerprint" not in meta["tokenizer"]:
        raise ValueError('meta["tokenizer"] must be a dict with a "fingerprint"')
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
        raise ValueError(f"n_layers must be a non-negative int (transformer blocks), got {n_layers!r}")
    fixed = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_layers": n_layers,
        "n_texts": n_texts,
        "probe_fingerprint": probe_fingerprint,
        "trajlab_version": __version__,
    }
    if clash := [
        k for k in ("n_layers", "n_texts", "probe_fingerprint") if k in meta and meta[k] != fixed[k]
    ]:
        raise ValueError(f"meta{clash} disagrees with the probe / n_layers given")
    own_id = meta.get("id") or uuid.uuid4().hex
    out = {
        **meta,
        **fixed,
        "id": own_id,
        "lineage": _checked_lineage(meta.get("lineage"), own_id),
        "warmup_steps": meta.get("warmup_steps"),
        "max_steps": meta.get("max_steps"),
        "scoring": _checked_scoring(meta.get("scoring") or dict.fromkeys(SCORING_SCHEMA), n_texts),
        "model": _model_block(meta["model"], meta),
    }
    _check_types(out, META_SCHEMA, "meta")
    for key in ("warmup_steps", "max_steps"):
        if out[key] is not None and out[key] < 0:
            raise ValueError(f"meta[{key!r}] must be >= 0 or null, got {out[key]}")
    return out


def settings_mismatch(
    meta: Mapping, probe_fingerprint=None, n_layers=None, tokenizer=None, scoring: Mapping | None = None
) -> str | None:
    """Why snapshots with these settings (None: not checked) cannot join a store with `meta`, or None. A
    scoring key the store did not record (null) is not checked either."""
    checks = [
        ("probe fingerprint", probe_fingerprint, meta["probe_fingerprint"]),
        ("n_layers", n_layers, meta["n_layers"]),
        ("tokenizer fingerprint", tokenizer, meta["tokenizer"].get("fingerprint")),
        *((f"scoring {k}", (scoring or {}).get(k), meta["scoring"][k]) for k in SCORING_SCHEMA),
    ]
    for what, given, stored in checks:
        if given is not None and stored is not None and given != stored:
            given, stored = (f"({len(x)} values)" if isinstance(x, list) else x for x in (given, stored))
            return f"{what} {given} differs from the store's {stored}"
    return None


def read_meta(raw: bytes, root: Path, depth: int = 0) -> dict:
    """meta.json's bytes as TrajectoryStore.meta: every META_SCHEMA key present (version 1: the defaults)."""
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{root}/meta.json is corrupted ({e}); the store cannot be opened") from None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or meta.get("format_version") not in READABLE_VERSIONS
    ):
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(
            f"{root}/meta.json is not a {FORMAT} store of a version this trajlab reads "
            f"({', '.join(map(str, READABLE_VERSIONS))}; found {version!r}): upgrade trajlab"
        )
    if meta["format_version"] == 1:
        own_id = "v1-" + hashlib.sha256(raw).hexdigest()[:32]
        meta = {"id": own_id, "lineage": _v1_lineage(meta.get("parent"), own_id, depth)} | meta
    meta.setdefault("lineage", {"root": meta["id"], "parent": None})
    meta["model"] = _model_block(meta.get("model", "unknown"), meta)
    meta.setdefault("warmup_steps", None)
    meta.setdefault("max_steps", None)
    meta.setdefault(
        "scoring", dict(V1_SCORING) if meta["format_version"] == 1 else dict.fromkeys(SCORING_SCHEMA)
    )
    return meta


def _v1_lineage(parent, own_id: str, depth: int) -> dict:
    """Lineage of a version-1 store from its old meta["parent"] {"run", "step", "store"}: the parent store's
    id and root when that folder still holds a readable store, else the store's own root."""
    own = {"root": own_id, "parent": None}
    if (
        not isinstance(parent, Mapping)
        or not isinstance(parent.get("step"), int)
        or depth >= _V1_PARENT_DEPTH
    ):
        return own
    path = Path(str(parent.get("store", "")))
    try:
        pmeta = read_meta((path / "meta.json").read_bytes(), path, depth + 1)
    except (OSError, ValueError):
        return own
    return {"root": pmeta["lineage"]["root"], "parent": {"id": pmeta["id"], "step": parent["step"]}}


def child_lineage(parent_meta: Mapping, parent_steps: Iterable[int], step: int | None = None) -> dict:
    """meta["lineage"] of a store that continues from a parent store's snapshot `step` (default its last).

    Raises:
        ValueError: the parent holds no snapshots, or not `step`.
    """
    steps = [int(s) for s in parent_steps]
    if not steps:
        raise ValueError(f"parent store {parent_meta.get('run')!r} holds no snapshots to continue from")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise ValueError(
            f"parent store {parent_meta.get('run')!r} has no snapshot at step {step} (it holds "
            f"{steps[0]}..{steps[-1]}, {len(steps)} steps); name one of its steps"
        )
    return {"root": parent_meta["lineage"]["root"], "parent": {"id": parent_meta["id"], "step": step}}


def check_comparable(stores: Iterable) -> None:
    """Refuse or warn before rows of one probe from differently scored stores are compared.

    `stores`: TrajectoryStore objects, or (label, meta) pairs for a store still to be written. Among those
    that share a probe fingerprint, a mix of long_texts "truncate" (part of each long text scored) with
    "rolling" or "error" (whole texts) is refused: the KL between them would mix the change of the model
    with the change of the scored span. A different stride (among rolling stores), window or lens dtype warns
    (same spans, slightly different numbers); a different tokenizer is what bits/byte is for and passes
    silently. Unrecorded (null) settings pass.

    Raises:
        ValueError: truncated and whole-text rows of one probe, in one line naming both stores.
    """
    named = [(s[0], s[1]) if isinstance(s, tuple) else (str(s.path), s.meta) for s in stores]
    groups: dict[str, list[tuple[str, dict]]] = {}
    for label, meta in named:
        groups.setdefault(meta.get("probe_fingerprint"), []).append((label, meta.get("scoring") or {}))
    differing = []
    for group in groups.values():
        cut = next(((n, s) for n, s in group if s.get("long_texts") == "truncate"), None)
        whole = next(((n, s) for n, s in group if s.get("long_texts") in ("rolling", "error")), None)
        if cut and whole:
            raise ValueError(
                f"cannot compare {cut[0]} (long_texts='truncate': long texts cut at the window) with "
                f"{whole[0]} (long_texts={whole[1]['long_texts']!r}: whole texts) on one probe; rescore one "
                "of them with the other's long_texts"
            )
        rolling = [(n, s) for n, s in group if s.get("long_texts") == "rolling"]
        for key, members in (("stride", rolling), ("window", group), ("lens_dtype", group)):
            values = {n: s.get(key) for n, s in members if s.get(key) is not None}
            if len(set(values.values())) > 1:
                differing.append(f"{key} " + ", ".join(f"{v} ({n})" for n, v in values.items()))
    if differing:
        warnings.warn(
            "stores scored with different settings (comparable, numbers shift slightly): "
            + "; ".join(differing),
            stacklevel=2,
        )
