"""CLI commands, one module each (see compressor/cli.py)."""
