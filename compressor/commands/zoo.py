"""`compressor zoo`: list the zoo's models and datasets."""
from __future__ import annotations

import argparse

from compressor.zoo import DATASETS, MODELS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list zoo models and datasets",
                       description="List the models recipes can name with 'model: {zoo: NAME}' "
                                   "and the datasets they use.")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    print("models:")
    for m in MODELS.values():
        print(f"  {m.name:<14} {m.description}  [data: {m.dataset}; weights: {m.weights}]")
    print("datasets:")
    for d in DATASETS.values():
        print(f"  {d.name:<18} {d.description}")
    return 0
