"""Where an import's revisions live on disk, whether they are safe to load, their hashes, and loading them.

A model reference is one of:
  * a Hugging Face repo id (``EleutherAI/pythia-70m``): each revision (branch, tag, commit) is found in the HF
    cache (``cache_dir``, else ``$HF_HUB_CACHE``) and, unless offline, downloaded through huggingface_hub;
  * an HF cache folder (``.../hub/models--ORG--NAME``): the same, read from that cache only;
  * a ``save_pretrained`` folder, or a GGUF file (or a folder plus ``gguf_file``): one revision.

Security: public checkpoints are untrusted. Weights are read from safetensors (or the GGUF file); a revision
with only pickles (``pytorch_model*.bin``) is refused unless ``allow_pickle``, and then transformers loads
them with ``torch.load(weights_only=True)``, which unpickles tensors and plain containers only (anything else
raises UnpicklingError). ``trust_remote_code`` stays False unless asked for.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trajlab.hub.revisions import is_pythia, pythia_meta

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "ON", "YES", "TRUE"}


class RefusedCheckpointError(ValueError):
    """A checkpoint the importer will not load (pickles without allow_pickle, not a causal LM)."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model's revisions live.

    Attributes:
        kind: "hub" (repo id or HF cache folder), "dir" (save_pretrained folder) or "gguf".
        name: repo id, or the absolute path of the folder / GGUF file (what a store records as "model").
        path: the folder (dir, gguf); None for hub.
        gguf_file: the GGUF file name inside `path` (or inside each hub revision).
        cache_dir: the HF cache (hub); None means huggingface_hub's default.
        cache_only: never download (the reference was a cache folder).
    """

    kind: str
    name: str
    path: Path | None = None
    gguf_file: str | None = None
    cache_dir: Path | None = None
    cache_only: bool = False

    @property
    def pythia(self) -> bool:
        return is_pythia(self.name)

    @property
    def meta(self) -> dict:
        return pythia_meta(self.name)

    @property
    def run_name(self) -> str:
        return self.name.split("/")[-1] if self.kind == "hub" else Path(self.gguf_file or self.name).stem


@dataclass(frozen=True)
class Checkpoint:
    """One revision on local disk, ready to load.

    Attributes:
        revision, step: its name and step.
        folder: the snapshot / save_pretrained folder.
        commit: the hub commit sha (None for local folders and files).
        weight_files: weight file names inside `folder`.
        pickle: the weights are pickles (pytorch_model*.bin).
        gguf_file: the GGUF file name, for GGUF checkpoints.
        source: "repo@revision" or the local path.
    """

    revision: str
    step: int
    folder: Path
    commit: str | None
    weight_files: tuple[str, ...]
    pickle: bool
    gguf_file: str | None
    source: str

    @property
    def format(self) -> str:
        return "gguf" if self.gguf_file else "pickle" if self.pickle else "safetensors"


def model_ref(
    model: str | os.PathLike, *, gguf_file: str | None = None, cache_dir: str | os.PathLike | None = None
) -> ModelRef:
    """Classify a model reference (see the module docstring).

    Raises:
        FileNotFoundError: not an existing path and not of the form ORG/NAME, or a missing gguf_file.
        RefusedCheckpointError: a file that is not a .gguf.
    """
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise RefusedCheckpointError(
                f"{path} is a file but not a .gguf model; pass a GGUF file, a save_pretrained folder or a "
                "hub repo id"
            )
        return ModelRef("gguf", str(path.resolve()), path.resolve().parent, path.name)
    if path.is_dir():
        if path.name.startswith("models--") and (path / "snapshots").is_dir():
            repo = path.name.removeprefix("models--").replace("--", "/")
            cache = path.resolve().parent
            return ModelRef("hub", repo, gguf_file=gguf_file, cache_dir=cache, cache_only=True)
        if gguf_file is None:
            return ModelRef("dir", str(path.resolve()), path.resolve())
        if not (path / gguf_file).is_file():
            raise FileNotFoundError(f"no GGUF file {gguf_file} in {path}")
        return ModelRef("gguf", str((path / gguf_file).resolve()), path.resolve(), gguf_file)
    if not _REPO_ID.fullmatch(str(model)):
        raise FileNotFoundError(
            f"model {str(model)!r} is neither an existing path nor a hub repo id (ORG/NAME)"
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    return ModelRef("hub", str(model), gguf_file=gguf_file, cache_dir=cache)


def check_causal_lm(folder: Path, *, trust_remote_code: bool) -> None:
    """Refuse a folder whose config.json is missing or names no causal LM that transformers can build."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise RefusedCheckpointError(
            f"{folder} is not a causal LM checkpoint: cannot read config.json ({e}); pass a save_pretrained "
            "folder, a GGUF file or a hub repo id"
        ) from None
    config = config if isinstance(config, dict) else {}
    remote = "AutoModelForCausalLM" in config.get("auto_map", {})
    known = config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not known and not (remote and trust_remote_code):
        hint = "; it ships its own code: pass --trust-remote-code if you trust it" if remote else ""
        raise RefusedCheckpointError(
            f"{folder} is not a causal LM: model_type {config.get('model_type')!r} has no "
            f"AutoModelForCausalLM class in transformers{hint}"
        )


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def local_only(ref: ModelRef, offline: bool | None) -> bool:
    """Whether revisions come from local files only (a folder, a GGUF file, a cache folder, or offline;
    `offline` None follows HF_HUB_OFFLINE)."""
    return ref.kind != "hub" or ref.cache_only or (hub_offline() if offline is None else offline)


def _cache_dir(ref: ModelRef) -> Path:
    from huggingface_hub import constants

    return ref.cache_dir or Path(constants.HF_HUB_CACHE)


def cached_commit(ref: ModelRef, revision: str) -> str | None:
    """The commit a revision name points to in the local HF cache (None if not cached or not a hub model)."""
    if ref.kind != "hub":
        return None
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    ref_file = _cache_dir(ref) / f"models--{ref.name.replace('/', '--')}" / "refs" / revision
    return ref_file.read_text().strip() if ref_file.is_file() else None


def _weights_in(names: Sequence[str], gguf_file: str | None) -> tuple[tuple[str, ...], bool]:
    """(weight files, whether they are pickles) among top-level file names; safetensors win over pickles."""
    if gguf_file is not None:
        return ((gguf_file,) if gguf_file in names else ()), False
    for pattern, pickle in (("model*.safetensors", False), ("pytorch_model*.bin", True)):
        if found := tuple(sorted(n for n in names if fnmatch.fnmatch(n, pattern))):
            return found, pickle
    return (), False


def _pickle_refusal(source: str, weights: Sequence[str]) -> str:
    return (
        f"{source} has only pickle weights ({', '.join(weights)}); unpickling untrusted files can run code, "
        "so they are refused. Pass --allow-pickle (allow_pickle=True) to load them with "
        "torch.load(weights_only=True)"
    )


def _download(ref: ModelRef, revision: str, allow_pickle: bool, trust_remote_code: bool) -> Path:
    """Download a revision's config, tokenizer and the weights to load; returns its snapshot folder.
    A pickle-only revision is refused before anything is downloaded."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        names = [n for n in HfApi().list_repo_files(ref.name, revision=revision) if "/" not in n]
    except RevisionNotFoundError:
        raise FileNotFoundError(
            f"{ref.name} has no revision {revision!r} on {constants.ENDPOINT} (HTTP 404): check the name "
            "against the model's branches on the hub and drop or correct it in --revisions"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"no model {ref.name} on {constants.ENDPOINT} (HTTP 404): check the repo id, or log in "
            "(`hf auth login`) if it is private or gated"
        ) from None
    weights, pickle = _weights_in(names, ref.gguf_file)
    if pickle and not allow_pickle:
        raise RefusedCheckpointError(_pickle_refusal(f"{ref.name}@{revision}", weights))
    code = ["*.py"] if trust_remote_code else []
    patterns = ["*.json", "*.txt", "*.model", "*.tiktoken", "README.md", *weights, *code]  # card: lineage
    folder = snapshot_download(ref.name, revision=revision, cache_dir=ref.cache_dir, allow_patterns=patterns)
    return Path(folder)


def hub_branches(ref: ModelRef, offline: bool | None) -> list[str]:
    """The branch names of a hub model: the hub's list (``list_repo_refs``), or offline the refs of the local
    HF cache (the branches fetched so far).

    Raises:
        ValueError: not a hub model.
        FileNotFoundError: offline and no branch of the model in the cache (the message says how to fetch).
    """
    if ref.kind != "hub":
        raise ValueError(f"{ref.name} is a local folder or file, not a hub repo: it has no branch list")
    if not local_only(ref, offline):
        from huggingface_hub import HfApi

        return [b.name for b in HfApi().list_repo_refs(ref.name).branches]
    refs = _cache_dir(ref) / f"models--{ref.name.replace('/', '--')}" / "refs"
    names = sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []
    names = [n for n in names if not n.startswith("pr/")]
    if not names:
        raise FileNotFoundError(
            f"the hub is offline and the HF cache {_cache_dir(ref)} holds no branch of {ref.name}; unset "
            "HF_HUB_OFFLINE to list its branches, or name the revisions"
        )
    return names


def resolve_checkpoint(
    ref: ModelRef, revision: str, step: int, *, offline: bool, allow_pickle: bool, trust_remote_code: bool
) -> Checkpoint:
    """The local files of one revision, downloading them unless offline (or a cache folder was given).

    Raises:
        FileNotFoundError: offline and the revision is not in the HF cache (the message says how to fetch it).
        RefusedCheckpointError: not a causal LM, no loadable weights, or pickles without allow_pickle.
    """
    commit = None
    if ref.kind != "hub":
        folder = ref.path
    elif offline or ref.cache_only:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(ref.name, revision=revision, cache_dir=_cache_dir(ref),
                                            local_files_only=True))
        except LocalEntryNotFoundError:
            raise FileNotFoundError(missing_message(ref, [revision])) from None
        commit = folder.name
    else:
        folder = _download(ref, revision, allow_pickle, trust_remote_code)
        commit = folder.name
    if ref.gguf_file is None:
        check_causal_lm(folder, trust_remote_code=trust_remote_code)
    weights, pickle = _weights_in(sorted(p.name for p in folder.iterdir() if p.is_file()), ref.gguf_file)
    source = f"{ref.name}@{revision}" if ref.kind == "hub" else ref.name
    if not weights:
        raise RefusedCheckpointError(
            f"{source}: no weights in {folder} (expected model*.safetensors, pytorch_model*.bin, or GGUF)"
        )
    if pickle and not allow_pickle:
        raise RefusedCheckpointError(_pickle_refusal(source, weights))
    return Checkpoint(revision, step, folder, commit, weights, pickle, ref.gguf_file, source)


def missing_message(ref: ModelRef, revisions: Sequence[str]) -> str:
    """What is missing from the offline cache, and how to fetch it."""
    shown = ", ".join(revisions[:5]) + (f" (+{len(revisions) - 5} more)" if len(revisions) > 5 else "")
    cache = f" --cache-dir {ref.cache_dir}" if ref.cache_dir else ""
    return (
        f"revision(s) {shown} of {ref.name} are not in the HF cache {_cache_dir(ref)} and the hub is offline "
        f"(HF_HUB_OFFLINE=1); fetch each with `hf download {ref.name} --revision {revisions[0]}{cache}` "
        "(older huggingface_hub: `huggingface-cli download ...`), or unset HF_HUB_OFFLINE to download them"
    )


def weight_sha256(ckpt: Checkpoint) -> dict[str, str]:
    """sha256 of each weight file. A hub blob named by a sha256 (LFS files) must match it.

    Raises:
        ValueError: a weight file whose content differs from its hub sha256 (a truncated or damaged download).
    """
    out = {}
    for name in ckpt.weight_files:
        path = ckpt.folder / name
        with open(path, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        blob = Path(os.path.realpath(path)).name
        if _SHA256.fullmatch(blob) and blob != sha:
            raise ValueError(
                f"{ckpt.source}: {name} is corrupt (sha256 {sha[:12]}... differs from the hub's "
                f"{blob[:12]}...); delete it from the cache and download it again"
            )
        out[name] = sha
    return out


def load_checkpoint(ckpt: Checkpoint, *, dtype: str = "float32", device: str | None = None,
                    trust_remote_code: bool = False, tokenizer: bool = True):
    """(model in eval mode on `device`, its tokenizer or None), loaded as the module docstring says."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common: dict = {"trust_remote_code": trust_remote_code}
    if ckpt.gguf_file is not None:
        common["gguf_file"] = ckpt.gguf_file
    weights = {} if ckpt.gguf_file else {"use_safetensors": not ckpt.pickle, "weights_only": True}
    model = AutoModelForCausalLM.from_pretrained(ckpt.folder, dtype=getattr(torch, dtype), **common,
                                                 **weights)
    if device is not None:
        model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(ckpt.folder, **common) if tokenizer else None


def delete_from_cache(ckpt: Checkpoint, ref: ModelRef) -> int:
    """Delete a hub revision's snapshot from the HF cache, keeping blobs that other cached revisions use.

    Returns the bytes freed (0 for local folders and files, which are never deleted).
    """
    if ref.kind != "hub" or ckpt.commit is None:
        return 0
    from huggingface_hub import scan_cache_dir

    strategy = scan_cache_dir(_cache_dir(ref)).delete_revisions(ckpt.commit)
    strategy.execute()
    return strategy.expected_freed_size
