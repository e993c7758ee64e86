"""compressor: recipe-driven compression and export of PyTorch models for edge targets.

>>> import compressor
>>> report = compressor.run("recipes/quickstart.yaml", overrides=["finetune.epochs=1"])
>>> report.final["quality"]
"""
from compressor.api import deploy, load_model, resume, run
from compressor.errors import CompressorError, RecipeError, RecipeErrors
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe
from compressor.report import Report

__all__ = ["CompressorError", "Recipe", "RecipeError", "RecipeErrors", "Report", "deploy", "load_model",
           "load_recipe", "resume", "run"]
__version__ = "0.1.0"
