"""ProbeSet: the fixed texts every model is scored on, with their byte lengths, domains and a fingerprint.

The LL vectors of two models are comparable only when they were computed on the same texts in the same order,
so a probe set carries a fingerprint (sha256 over the texts, order-sensitive) that travels with every store. Each
text may carry the domain it was cut from (``domains``), so KL tables can split into within- and between-domain
parts; domains are labels and not part of the fingerprint. A probe built by a recipe (`trajlab probe build`,
trajlab.data.probe_build) carries it (``recipe``: the source and every setting), and so does every store scored
on it (the store's probe.json is `to_dict`); the recipe is not part of the fingerprint either.

Files: `save` / `to_dict` write one JSON object; `to_json` writes the plainest form that loses nothing (the
paper's released format, a JSON list of strings, when there are no domains and no recipe); `from_json` (and
`load`) read all three forms: a list of strings, a list of {"text", "domain"} objects, or the object.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from trajlab._io import write_atomic
from trajlab.data.corpus import (
    BUNDLED,
    corpus_fingerprint,
    domain_name,
    mixture_probe,
    mixture_weights,
    probe_texts,
)


def texts_fingerprint(texts: Sequence[str]) -> str:
    """sha256 hex over the texts in order: the corpus module's fingerprint (8-byte length + UTF-8 bytes each),
    so ["ab", "c"] != ["a", "bc"] and a probe cut from a corpus hashes like the same texts as documents."""
    return corpus_fingerprint(list(texts))


class ProbeSet:
    """An ordered, named list of probe texts.

    Treat it as immutable: `fingerprint` and `n_bytes` are computed once.

    Attributes:
        name: a human-readable label (not part of the fingerprint).
        texts: the probe texts, in scoring order.
        domains: the source domain of each text, or None when unknown (not part of the fingerprint).
        recipe: how the texts were made (source and settings, JSON-ready), or None (not part of the fingerprint).
    """

    def __init__(self, texts: Iterable[str], name: str = "probe", *, domains: Iterable[str] | None = None,
                 recipe: dict | None = None):
        texts = list(texts)
        if not texts:
            raise ValueError("a ProbeSet needs at least one text, got none")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"probe text {i} is a {type(text).__name__}, expected str")
        if not isinstance(name, str) or not name:
            raise ValueError(f"probe name must be a non-empty str, got {name!r}")
        if domains is not None:
            if isinstance(domains, str):
                raise ValueError("domains must be a list of str (one per text), got a single str")
            domains = tuple(domains)
            if len(domains) != len(texts) or not all(isinstance(d, str) and d for d in domains):
                raise ValueError(
                    f"domains must be {len(texts)} non-empty str, one per text; got {len(domains)} entries"
                )
        if recipe is not None and not isinstance(recipe, dict):
            raise ValueError(f"recipe must be a dict (source and settings) or None, got {type(recipe).__name__}")
        self.texts: list[str] = texts
        self.name = name
        self.domains: tuple[str, ...] | None = domains
        self.recipe: dict | None = recipe

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], name: str = "probe", *, domains: Iterable[str] | None = None,
        recipe: dict | None = None,
    ) -> ProbeSet:
        """A probe set over the given texts, in the given order."""
        if isinstance(texts, str):
            raise ValueError("texts must be a list of str, got a single str")
        return cls(texts, name=name, domains=domains, recipe=recipe)

    @classmethod
    def default(cls, n_per_domain: int | None = None) -> ProbeSet:
        """The probe chunks of the bundled corpora, pretraining domain first, with their domains.

        Args:
            n_per_domain: chunks per domain; None for each domain's default (`corpus.probe_texts`).
        """
        parts = [(d, probe_texts(d, n=n_per_domain, seed=0)) for d in BUNDLED]
        suffix = "" if n_per_domain is None else f"-n{n_per_domain}"
        return cls(
            [t for _, ts in parts for t in ts], name="+".join(BUNDLED) + suffix,
            domains=[d for d, ts in parts for _ in ts],
        )

    @classmethod
    def mixture(cls, mixture: str | dict[str, float], n: int, seed: int = 0) -> ProbeSet:
        """n held-out texts in a corpus mixture's proportions, domains recorded (`corpus.mixture_probe`): the
        probe the data module holds out for ``data.corpus: mixture``, excluded from every run's training data.

        Args:
            mixture: {corpus: weight} (weights are normalised) or one corpus.
            n: number of texts.
            seed: split seed (the data module's ``split_seed``).
        """
        texts, domains = mixture_probe(mixture, n, seed=seed)
        weights = mixture_weights(mixture)
        label = "+".join(f"{domain_name(k)}{w:.2g}" for k, w in weights.items())
        return cls(texts, name=f"mix-{label}-n{n}", domains=domains)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"ProbeSet(name={self.name!r}, n={len(self)}, fingerprint={self.fingerprint[:12]})"

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex over the texts (order-sensitive, see `texts_fingerprint`)."""
        return texts_fingerprint(self.texts)

    @cached_property
    def n_bytes(self) -> np.ndarray:
        """(N,) int64 UTF-8 byte length of each text."""
        return np.array([len(t.encode("utf-8")) for t in self.texts], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ProbeSet:
        """The texts at `indices` (ints, or a boolean mask of length N), in that order.

        The name records the parent and a hash of the indices, e.g. ``probe/subset-3-1a2b3c4d``.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"a boolean mask must have length {len(self)}, got shape {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D sequence of ints, got dtype {idx.dtype}, shape {idx.shape}")
        idx = idx.astype(np.int64)
        bad = idx[(idx < 0) | (idx >= len(self))]
        if bad.size:
            raise ValueError(f"subset index {int(bad[0])} is out of range for a probe set of {len(self)} texts")
        digest = hashlib.sha256(idx.tobytes()).hexdigest()
        recipe = None
        if self.recipe is not None:
            recipe = self.recipe | {"subset_of": self.fingerprint, "indices_sha256": digest}
        return ProbeSet(
            [self.texts[i] for i in idx], name=f"{self.name}/subset-{idx.size}-{digest[:8]}",
            domains=None if self.domains is None else [self.domains[i] for i in idx], recipe=recipe,
        )

    def to_dict(self) -> dict:
        """JSON-ready metadata: name, fingerprint, n_texts, texts, and domains and recipe when known."""
        d = {"name": self.name, "fingerprint": self.fingerprint, "n_texts": len(self), "texts": self.texts}
        if self.domains is not None:
            d["domains"] = list(self.domains)
        return d if self.recipe is None else d | {"recipe": self.recipe}

    @classmethod
    def from_dict(cls, d: dict) -> ProbeSet:
        """Inverse of `to_dict`; verifies the fingerprint.

        Raises:
            ValueError: a missing field, or texts whose fingerprint differs from the recorded one.
        """
        missing = [k for k in ("name", "fingerprint", "texts") if k not in d]
        if missing:
            raise ValueError(f"probe metadata lacks field(s) {missing}; expected the output of ProbeSet.to_dict()")
        probe = cls(d["texts"], name=d["name"], domains=d.get("domains"), recipe=d.get("recipe"))
        if probe.fingerprint != d["fingerprint"]:
            raise ValueError(
                f"probe {d['name']!r}: texts hash to {probe.fingerprint[:12]} but the recorded fingerprint is "
                f"{str(d['fingerprint'])[:12]}; the texts were changed or the file is corrupt"
            )
        return probe

    def save(self, path: str | Path) -> Path:
        """Write `to_dict` as one JSON file (atomically: temp file, then rename). Returns the path."""
        return _write_json(path, self.to_dict())

    def to_json(self, path: str | Path) -> Path:
        """Write the plainest JSON that loses nothing (atomically). Returns the path.

        A list of strings (the paper's released data/texts.json) without domains or recipe; a list of
        {"text", "domain"} objects with domains and no recipe; else the `to_dict` object (name, fingerprint,
        texts, domains, recipe). The name survives only in the object form: `from_json` names a list file
        after its stem.
        """
        if self.recipe is not None:
            return _write_json(path, self.to_dict())
        if self.domains is None:
            return _write_json(path, self.texts)
        pairs = zip(self.texts, self.domains, strict=True)
        return _write_json(path, [{"text": t, "domain": d} for t, d in pairs])

    @classmethod
    def from_json(cls, path: str | Path) -> ProbeSet:
        """Read a probe file: a JSON list of strings, a list of {"text", "domain"} objects (domain optional,
        given for all or none), or the object `save` / `to_dict` writes (its fingerprint verified).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not valid JSON, an item that is not a string or such an object, a fingerprint
                mismatch (one line: what is wrong and where).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no probe file at {path}; pass a JSON list of texts or a file written by ProbeSet.to_json / "
                "save"
            )
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a valid probe file (corrupt JSON: {e})") from None
        try:
            if isinstance(d, dict):
                return cls.from_dict(d)
            if isinstance(d, list):
                texts, domains = _list_items(d)
                return cls(texts, name=path.stem or "probe", domains=domains)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        raise ValueError(
            f"{path} is not a probe file: expected a JSON list of texts or an object, got {type(d).__name__}"
        )

    @classmethod
    def load(cls, path: str | Path) -> ProbeSet:
        """Read a probe file written by `save` or `to_json`, or a JSON list of texts: see `from_json`."""
        return cls.from_json(path)


def _write_json(path: str | Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
    return path


def _list_items(items: list) -> tuple[list[str], list[str] | None]:
    """(texts, domains or None) of a JSON list of strings or of {"text", "domain"} objects."""
    if not items:
        raise ValueError("the list holds no texts")
    if isinstance(items[0], str):
        if bad := next((i for i, x in enumerate(items) if not isinstance(x, str)), None):
            raise ValueError(
                f"item {bad} is a {_json_type(items[bad])}, expected a string like the items before it"
            )
        return items, None
    texts, domains = [], []
    for i, x in enumerate(items):
        if not isinstance(x, dict) or not isinstance(x.get("text"), str):
            what = f"an object whose 'text' is {_json_type(x.get('text'))}" if isinstance(x, dict) else (
                f"a {_json_type(x)}")
            raise ValueError(
                f'item {i} is {what}; expected a string or a {{"text": str, "domain": str}} object'
            )
        texts.append(x["text"])
        domains.append(x.get("domain"))
    if all(d is None for d in domains):
        return texts, None
    if missing := [i for i, d in enumerate(domains) if not isinstance(d, str) or not d]:
        raise ValueError(
            f"item {missing[0]} has no domain (a non-empty str) while others do; give all or none"
        )
    return texts, domains


def _json_type(x) -> str:
    """The JSON name of a parsed value's type."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if x is None else names.get(type(x), type(x).__name__)
