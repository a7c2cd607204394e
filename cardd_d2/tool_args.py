"""The command-line dialect of cardd's detectron2-side tools.

Flags (``--config-file FILE``, ``--output DIR``, ...) may come in any order and position; config overrides are
``KEY VALUE`` pairs (detectron2 style, e.g. ``SOLVER.MAX_ITER 100``), conventionally at the end, optionally after
``--opts``. A token that is neither a known flag nor part of a ``KEY VALUE`` pair is a usage error (exit status 2)
whose message says where overrides go.

    parser = argparse.ArgumentParser(epilog=EXIT_STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", ...)
    args = parse_args_with_overrides(parser)      # args.opts: ["SOLVER.MAX_ITER", "100", ...]
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import List, Optional, Sequence, Tuple

__all__ = ["EXIT_STATUS_HELP", "OVERRIDES_HELP", "parse_args_with_overrides", "split_overrides"]

EXIT_STATUS_HELP = """exit status:
  0  finished
  1  some inputs failed (or the run failed)
  2  usage error: unknown flag, malformed override, missing or invalid config file or key"""

OVERRIDES_HELP = ("config overrides: KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100 MODEL.WEIGHTS model.pth "
                  "(anywhere between the flags; optionally after --opts)")

OVERRIDES_MARKER = "--opts"
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")


def _flag_and_value(parser: argparse.ArgumentParser, token: str):
    """The parser action of ``token`` (``--flag`` or ``--flag=value``) or None; allows unambiguous prefixes."""
    name = token.split("=", 1)[0]
    actions = parser._option_string_actions  # noqa: SLF001 - argparse keeps its flag table here
    if name in actions:
        return actions[name]
    if parser.allow_abbrev and name.startswith("--"):
        matches = {a for s, a in actions.items() if s.startswith(name)}
        if len(matches) == 1:
            return matches.pop()
    return None


def split_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Splits ``argv`` into the parser's flags (with their values) and the config-override tokens, in order."""
    flags: List[str] = []
    overrides: List[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == OVERRIDES_MARKER:
            i += 1
            continue
        action = _flag_and_value(parser, token) if token.startswith("-") and not _is_number(token) else None
        if token.startswith("-") and not _is_number(token) and action is None:
            parser.error(f"unrecognized flag {token!r}. {OVERRIDES_HELP}")
        if action is None:
            overrides.append(token)
            i += 1
            continue
        flags.append(token)
        i += 1
        if "=" in token:
            continue
        nargs = action.nargs
        if nargs is None:
            count = 1
        elif isinstance(nargs, int):
            count = nargs
        else:  # "?", "*", "+": values up to the next flag or config key
            count = 0
            while i + count < len(argv) and not _ends_values(parser, argv[i + count]):
                count += 1
                if nargs == "?":
                    break
        flags.extend(argv[i:i + count])
        i += count
    return flags, overrides


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _ends_values(parser, token: str) -> bool:
    return token == OVERRIDES_MARKER or bool(_CONFIG_KEY.match(token)) or (
        token.startswith("-") and not _is_number(token))


def _check_overrides(parser: argparse.ArgumentParser, overrides: List[str]):
    keys = overrides[0::2]
    bad = [k for k in keys if not _CONFIG_KEY.match(k)]
    if bad or len(overrides) % 2:
        where = f"{bad[0]!r} is not a config key (keys are upper case, e.g. SOLVER.MAX_ITER)" if bad else (
            f"{len(overrides)} tokens, the last key has no value: {overrides[-1]!r}")
        parser.error(f"config overrides must be KEY VALUE pairs ({where}). {OVERRIDES_HELP}")


def parse_args_with_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                              dest: str = "opts") -> argparse.Namespace:
    """``parser.parse_args`` with flags anywhere and the config overrides in ``args.<dest>`` (a list).

    ``parser`` must not declare a positional argument that swallows the overrides itself (use it for flags only; a
    detectron2 ``opts`` REMAINDER positional is allowed and receives nothing).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides = split_overrides(parser, argv)
    _check_overrides(parser, overrides)
    args = parser.parse_args(flags)
    setattr(args, dest, overrides)
    return args
