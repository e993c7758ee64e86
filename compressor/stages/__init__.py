"""Stages, one module each; importing this package registers them all."""
from compressor.stages.base import STAGES, Stage, StageParams, register_stage
from compressor.stages import finetune, export, prune, distill, quantize, codebook, lowrank  # noqa: F401

__all__ = ["STAGES", "Stage", "StageParams", "register_stage"]
