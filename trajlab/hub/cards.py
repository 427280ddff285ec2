"""Fine-tune lineage from a hub model's card: the ``base_model`` of README.md's YAML front matter.

The paper's fine-tune pairs are a public base and a model fine-tuned from it, named by the hub's model-card
metadata (``cardData.base_model``); merges with several parents are dropped. An import reads the card of the
first revision it scores (from the snapshot folder: offline, the cached README.md) and records, in meta:

* ``lineage`` = {"root": "hf:BASE", "parent": {"id": "hf:BASE", "step": S}}: the parent named by repo id in
  the ``hf:`` namespace (store ids are uuid hex, so they never collide), S the step the base's ``main`` gets
  when imported (143000 for a Pythia base, else 0);
* ``base_model`` = {"repo": BASE, "relation": the card's base_model_relation or null, "source": "model card",
  "recorded": true}.

A card naming several parents (a merge), or whose relation is "merge" or "quantized" (no fine-tune), records
``base_model`` with "recorded": false and why, and no lineage. An analysis matches "hf:BASE" to the analysed
run whose meta["model"]["name"] is BASE.
"""

from __future__ import annotations

from pathlib import Path

from trajlab.hub.revisions import is_pythia, step_of

HUB_ID_PREFIX = "hf:"
_NOT_FINETUNES = ("merge", "quantized")


def read_card(folder: str | Path) -> dict:
    """The YAML front matter of ``folder/README.md`` as a dict; {} without a card or front matter, or when it
    does not parse (a card is documentation: a broken one must not stop an import)."""
    path = Path(folder) / "README.md"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def card_meta(repo: str, folder: str | Path) -> dict:
    """Store meta from the card of `repo` in `folder`: {"lineage", "base_model"}, {"base_model"} (not
    recorded, with why), or {} when the card names no base model (module docstring)."""
    card = read_card(folder)
    base = card.get("base_model")
    if base is None or base == [] or base == "":
        return {}
    parents = [base] if isinstance(base, str) else list(base) if isinstance(base, list) else []
    parents = [str(p).strip() for p in parents]
    relation = card.get("base_model_relation")
    info = {"repo": parents[0] if len(parents) == 1 else None, "relation": relation, "source": "model card"}
    why = (
        f"the card names {len(parents)} base models {parents} (a merge)" if len(parents) != 1
        else f"base_model_relation is {relation!r}, not a fine-tune" if relation in _NOT_FINETUNES
        else "the card names the model itself" if parents[0] == repo
        else None
    )  # fmt: skip
    if why is not None:
        return {"base_model": info | {"repos": parents, "recorded": False, "why": why}}
    parent_id = HUB_ID_PREFIX + parents[0]
    step = step_of("main", pythia=is_pythia(parents[0])) or 0
    return {
        "lineage": {"root": parent_id, "parent": {"id": parent_id, "step": step}},
        "base_model": info | {"recorded": True},
    }
