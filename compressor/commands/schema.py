"""`compressor schema`: the recipe's JSON Schema for editors."""
from __future__ import annotations

import argparse
import json

from compressor.recipe.jsonschema import recipe_json_schema


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the recipe JSON Schema",
                       description="Print a JSON Schema of recipes. Point your editor at it, e.g. "
                                   "add '# yaml-language-server: $schema=recipe.schema.json' as "
                                   "the first line of a recipe.")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    print(json.dumps(recipe_json_schema(), indent=2))
    return 0
