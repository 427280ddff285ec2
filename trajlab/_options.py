"""One ``replace()`` for every option dataclass (ScoringConfig, RecordConfig, ImportConfig, AnalysisConfig, ...)
and one error for an option name that does not exist. Standard library only."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")


class UnknownOptionError(TypeError, ValueError):
    """An option name no option dataclass has. A TypeError, as Python raises for an unknown keyword argument,
    and a ValueError, so the command line prints it as one line like every other user mistake."""


def option_names(cls_or_obj) -> set[str]:
    """The field names of an option dataclass (class or instance)."""
    return {f.name for f in dataclasses.fields(cls_or_obj)}


def _groups(obj) -> dict[str, object]:
    """Fields of `obj` that hold option dataclasses themselves (nested groups such as ImportConfig.scoring)."""
    return {f.name: v for f in dataclasses.fields(obj)
            if dataclasses.is_dataclass(v := getattr(obj, f.name)) and not isinstance(v, type)}


def replace_options(obj: T, **options) -> T:
    """A copy of the option dataclass `obj` with `options` changed, checked again by its ``__post_init__``.

    A name that is not a field of `obj` but of one of its nested option groups (a field holding an option
    dataclass) changes that group: ``replace_options(import_config, long_texts="truncate")`` sets
    ``import_config.scoring.long_texts``.

    Raises:
        UnknownOptionError: a name that is neither, listing the valid ones.
        ValueError: a value the dataclass refuses.
    """
    own, groups = option_names(obj), _groups(obj)
    nested: dict[str, dict] = {}
    for name in sorted(set(options) - own):
        owner = next((g for g, group in groups.items() if name in option_names(group)), None)
        if owner is None:
            valid = sorted(own | {n for group in groups.values() for n in option_names(group)})
            unknown = sorted(n for n in options if n not in valid)
            raise UnknownOptionError(
                f"unknown {type(obj).__name__} option(s) {unknown}; valid: {', '.join(valid)}"
            )
        nested.setdefault(owner, {})[name] = options.pop(name)
    for group, changes in nested.items():
        options[group] = replace_options(options.get(group, groups[group]), **changes)
    return dataclasses.replace(obj, **options) if options else obj
