"""Recipe schema and loader."""
from compressor.recipe.loader import load_recipe
from compressor.recipe.schema import Recipe, StageSpec

__all__ = ["Recipe", "StageSpec", "load_recipe"]
