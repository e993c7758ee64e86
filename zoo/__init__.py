"""Model builders and their data; importing this package registers them all."""
from compressor.zoo.registry import DATASETS, MODELS, ZooDataset, ZooModel, build_model
from compressor.zoo import digits  # noqa: F401  (registration)
from compressor.zoo import (docstrings, english, minilm, mobilenet,  # noqa: F401  (registration)
                            mobilenet_v3, resnet, synthetic)

__all__ = ["DATASETS", "MODELS", "ZooDataset", "ZooModel", "build_model"]
