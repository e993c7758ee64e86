"""Model builders and their data; importing this package registers them all."""
from compressor.zoo.registry import DATASETS, MODELS, ZooDataset, ZooModel, build_model
from compressor.zoo import digits  # noqa: F401  (registration)
from compressor.zoo import docstrings, english, minilm, mobilenet, resnet, synthetic  # noqa: F401  (registration)

__all__ = ["DATASETS", "MODELS", "ZooDataset", "ZooModel", "build_model"]
