"""Where trained zoo weights are cached between runs."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$COMPRESSOR_CACHE`` or ``~/.cache/compressor``."""
    root = Path(os.environ.get("COMPRESSOR_CACHE", Path.home() / ".cache" / "compressor"))
    root.mkdir(parents=True, exist_ok=True)
    return root
