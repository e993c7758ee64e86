"""A JSON Schema of recipes, with each stage's parameters from its registered Params class."""
from __future__ import annotations

from typing import Any

from compressor.recipe.schema import Recipe
from compressor.stages import STAGES


def recipe_json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    variants = []
    for kind, cls in sorted(STAGES.items()):
        params = cls.Params.model_json_schema()
        defs.update(params.pop("$defs", {}))
        params["properties"] = {"name": {"type": "string", "description": "unique stage name"},
                                **params.get("properties", {})}
        variants.append({"type": "object", "properties": {kind: params}, "required": [kind],
                         "additionalProperties": False})
    schema["properties"]["stages"] = {"type": "array", "items": {"oneOf": variants},
                                      "description": "Stages, run in order: '- KIND: {params}'."}
    schema.pop("$defs") if not defs else None
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compressor recipe"
    return schema
