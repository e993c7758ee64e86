"""The recipe: its schema (``schema``, ``space`` for the search section), the loader that reads
YAML with line numbers (``loader``, ``lines``) and the JSON Schema for editors (``jsonschema``).

The loader validates stages against the stage registry, so it sits above the stages; the schema
modules sit below everything and import nothing of the stages.
"""
