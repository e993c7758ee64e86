"""Crash points, for tests of workers that die at an exact moment of a trial.

``COMPRESSOR_SEARCH_CRASH=POINT[@TRIAL][,POINT[@TRIAL]...]`` makes a worker SIGKILL itself when
a trial (the numbered one, else any) reaches POINT: ``asked`` (created by Optuna, no owner yet)
or ``evaluating`` (owned and sampled, about to run the stages).
Unset, a crash point costs one environment look-up.
"""
from __future__ import annotations

import os
import signal

CRASH_ENV = "COMPRESSOR_SEARCH_CRASH"


def crash_point(point: str, trial: int) -> None:
    """SIGKILL this process when ``COMPRESSOR_SEARCH_CRASH`` names this point (and trial)."""
    for spec in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        name, _, number = spec.strip().partition("@")
        if name == point and (not number or int(number) == trial):
            os.kill(os.getpid(), signal.SIGKILL)
