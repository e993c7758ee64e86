"""Helpers shared by CLI commands."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_recipe_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("recipe", nargs=None if required else "?", type=Path, help="recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set prune.sparsity=0.3 or "
                             "--set data.batch_size=32 (repeatable; values are YAML scalars)")


def add_trust_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-code", action="store_true",
                        help="allow a recipe's model.factory from modules refused by default (os, "
                             "subprocess, builtins, pickle, ...; see README, Trust model). A factory "
                             "is user code either way: only for recipes you wrote or read")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (argparse reports anything else, exit code 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high}, got {value}")
        return value
    return parse


def formatter() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter
