"""Argument types shared by the SOD command-line tools."""
import argparse

__all__ = ["name_path"]


def name_path(item: str) -> tuple:
    """argparse ``type=`` for repeatable ``NAME=PATH`` options: returns (NAME, PATH); a bad item is a usage error."""
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {item!r}")
    return name, path
