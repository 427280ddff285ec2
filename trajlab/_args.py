"""The subcommands' shared command-line pieces: jsonargparse parsers over option dataclasses, old flag spellings,
and what counts as a user's mistake and its one-line form (printed by trajlab.cli only). Standard library +
jsonargparse (imported when a parser is built)."""

from __future__ import annotations


# The tool subcommands' parsers: jsonargparse over the option dataclasses (each default lives in its
# dataclass), with --config FILE (YAML) and --print_config, like `fit`. Flags may be spelled with dashes or
# underscores (--batch-size, --batch_size); a bool flag alone means true (--clean-cache), --no-X means false.
_BOOL_WORDS = {"true", "false", "yes", "no"}


def tool_parser(prog: str, description: str, epilog: str | None = None):
    """A jsonargparse parser with ``--config FILE`` and ``--print_config``; a parse error raises."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # help texts from the dataclasses
    p = ArgumentParser(prog=prog, description=description, epilog=epilog, exit_on_error=False)
    p.add_argument("--config", action=ActionConfigFile,
                   help="a YAML file of options (--print_config writes one); later flags override it")
    return p


def parse_tool_args(parser, argv: list[str], aliases: dict[str, str] | None = None):
    """``parser.parse_args`` after `spelled`; a parse error raises ValueError naming ``--help``."""
    from jsonargparse import ArgumentError

    try:
        return parser.parse_args(spelled(parser, argv, aliases or {}))
    except ArgumentError as e:
        raise ValueError(f"{e}; `{parser.prog} --help` lists the options") from None


def _is_bool(action) -> bool:
    """Whether a parser action takes a bool (``bool`` or ``bool | None``)."""
    import typing

    hint = getattr(action, "_typehint", None)
    return hint is bool or set(typing.get_args(hint)) == {bool, type(None)}


def spelled(parser, argv: list[str], aliases: dict[str, str]) -> list[str]:
    """argv in the parser's spelling: dashes to underscores, ``aliases`` (old name -> new option, or
    ``--new=value`` for a flag that takes none) applied, ``--flag`` -> ``--flag true``, ``--no_flag`` ->
    ``--flag false`` for bool options."""
    actions = {s: a for a in parser._actions for s in a.option_strings}
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + argv[i:]
        if not token.startswith("--") or token in actions:
            name, eq, value = token, "", ""
        else:
            name, eq, value = token.partition("=")
            name = "--" + name[2:].replace("-", "_")
            name = aliases.get(name, name)
            if "=" in name:  # an old flag that stands for one value: --nats -> --n_bytes_units=false
                name, eq, value = name.partition("=")
            elif name not in actions and name.startswith("--no_") and _is_bool(actions.get("--" + name[5:])):
                name, eq, value = "--" + name[5:], "=", "false"
        out.append(name + eq + value)
        if not eq and _is_bool(actions.get(name)):
            following = argv[i + 1].lower() if i + 1 < len(argv) else ""
            if following not in _BOOL_WORDS:
                out[-1] += "=true"
    return out


# A user's mistake (a missing path, an unknown preset, a bad revision, a corrupt or mismatched file, a missing
# optional package or cluster resource) surfaces as one of these; trajlab.cli prints its message as one line.
# TRAJLAB_DEBUG=1 shows the traceback instead.
USER_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def one_line(e: BaseException) -> str:
    """The message of `e` on one line (a KeyError's without its quotes)."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and type(e).__str__ is KeyError.__str__ and e.args else str(e)
    return " ".join(msg.split()) or type(e).__name__
