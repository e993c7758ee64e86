"""User-facing errors: each names where the problem is and what was expected.

The CLI prints these as one line (no traceback unless ``--debug``) and exits with code 2.
"""
from __future__ import annotations

from pathlib import Path


class CompressorError(Exception):
    """Base class for errors caused by user input (recipes, files, options)."""

    exit_code = 2


class RecipeError(CompressorError):
    """A recipe problem, located by file, key path and line."""

    def __init__(self, message: str, *, file: str | Path | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.message, self.file, self.key, self.line = message, file, key, line
        super().__init__(self.format())

    def format(self) -> str:
        where = str(self.file) if self.file else "<recipe>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class RecipeErrors(CompressorError):
    """Several recipe problems found in one validation pass."""

    def __init__(self, errors: list[RecipeError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.format() for e in errors))


class ModelLoadError(CompressorError):
    """A model file is missing, corrupt or does not match its architecture."""


class UntrustedCodeError(CompressorError):
    """A recipe or checkpoint would make compressor import or call code it may not (see README, Trust model)."""


class DataError(CompressorError):
    """A recipe's data is missing, empty, of the wrong shape or type, or cannot be tokenized."""


class StageError(CompressorError):
    """A stage could not run with the given parameters on this model."""


class ExportError(CompressorError):
    """Export failed or its result broke a tolerance (the artifact is kept)."""
