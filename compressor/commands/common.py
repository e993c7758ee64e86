"""Helpers shared by CLI commands."""
from __future__ import annotations

import argparse


def add_recipe_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("recipe", nargs=None if required else "?", help="recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set prune.sparsity=0.3 or "
                             "--set data.batch_size=32 (repeatable; values are YAML scalars)")


def formatter() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter
