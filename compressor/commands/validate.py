"""`compressor validate`: check a recipe without running it."""
from __future__ import annotations

import argparse

from compressor.commands.common import add_recipe_args, add_trust_arg
from compressor.recipe.loader import load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a recipe and print its stages",
                       description="Load and validate a recipe: every problem is listed with its "
                                   "file, line and key; each model factory is imported to check it "
                                   "(it is user code). Exit code 0 when valid, 2 otherwise.")
    add_recipe_args(p)
    add_trust_arg(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, overrides=args.overrides, trust_code=args.trust_code)
    print(f"{args.recipe}: ok ({recipe.model.zoo or 'custom model'} on {recipe.target}, "
          f"{len(recipe.stages)} stage(s))")
    for factory in recipe.factories:
        print(f"note: this recipe imports {factory} (user code)")
    for i, spec in enumerate(recipe.stages, 1):
        params = spec.params.model_dump(exclude_defaults=True)
        print(f"  {i}. {spec.name} ({spec.kind}) {params if params else ''}")
    for warning in recipe.warnings:
        print(f"warning: {warning}")
    return 0
