"""Who runs a trial, and what becomes of it when its worker dies.

A worker writes its id (``host:pid``) into a trial as the first thing after Optuna's ``ask()``
created it. A RUNNING trial is failed and re-queued once its worker is known to be gone:

- its owner is a process on this host that no longer runs (a zombie counts as gone: a killed
  child of ``--workers`` stays one until its parent reaps it);
- its heartbeat is older than the grace period (RDB storages, any host: Optuna's
  ``fail_stale_trials``);
- it has no owner and started more than a grace period ago: its worker died between ``ask()``
  and the owner write, before Optuna's heartbeat of it began.

Re-queueing is Optuna's ``RetryHeartbeatStaleTrialCallback``: a WAITING trial with the same
parameters, which the next free worker takes. The failed trial no longer counts toward
``search.trials`` (see ``counted``), so the budget is still met.

"""
from __future__ import annotations

import copy
import datetime
import os
import signal
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from compressor.search.crash import crash_point
from compressor.search.objective import worker_id

OWNER = "worker"
#: How often a trial of a dead worker is re-queued before it is given up.
MAX_RETRY = 2
#: The user attributes a retry keeps (the rest describe the dead attempt).
RETRY_KEEPS = ("warm_start",)


class Owned:
    """``objective`` as a worker runs it: the trial's owner is written before anything else.
    ``trial`` is the number of the trial it was last given."""

    def __init__(self, objective: Callable[[optuna.Trial], Any]) -> None:
        self.objective = objective
        self.trial: int | None = None

    def __call__(self, trial: optuna.Trial) -> Any:
        self.trial = trial.number
        crash_point("asked", trial.number)
        trial.set_user_attr(OWNER, worker_id())
        return self.objective(trial)


def retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Re-queue a stale trial with its parameters (Optuna's callback) but not its dead attempt's
    attributes: its owner, configuration digest, directory and partial results."""
    clean = copy.deepcopy(trial)
    clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in RETRY_KEEPS}
    with warnings.catch_warnings():  # experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, clean)


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the failed trial that ``trial`` retries, if it is a retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def was_retried(study: optuna.Study, number: int) -> bool:
    """Whether trial ``number`` was taken for a dead worker's and re-queued."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history
        return any(number in history(t) for t in study.get_trials(deepcopy=False))


@dataclass
class Recovery:
    """Finds the study's RUNNING trials whose worker is gone, fails and re-queues them.

    ``grace_s``: how long a trial may go without heartbeat or owner. ``heartbeats``: whether
    the storage records them (then a dead worker of any host is found). ``children``: worker
    processes this one started, reaped here as they die.
    """

    grace_s: float
    heartbeats: bool
    children: list[subprocess.Popen] = field(default_factory=list)
    log: Callable[[str], None] = print

    def __call__(self, study: optuna.Study) -> list[int]:
        self.reap()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # by heartbeat; a no-op without one
        now = datetime.datetime.now()
        recovered = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._gone(trial, now) and _fail(study, trial.number):
                retry_stale(study, study.get_trials(deepcopy=False)[trial.number])
                recovered.append(trial.number)
        if recovered:
            self.log(f"re-queued trial(s) {', '.join(map(str, recovered))} of worker(s) that died")
        return recovered

    def reap(self, wait: bool = False) -> None:
        """Collect the children that ended, or all (``wait``): until then a dead child is a
        zombie, whose pid still answers ``kill(pid, 0)``."""
        for child in self.children:
            if child.returncode is None and (child.wait() if wait else child.poll()) is not None \
                    and child.returncode != 0:
                self.log(f"worker process {child.pid} ended with {_status(child.returncode)}")

    def watches(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether this worker would find out that ``trial``'s worker died, and so may wait for it."""
        owner = trial.user_attrs.get(OWNER)
        return self.heartbeats or owner is None or str(owner).rpartition(":")[0] == socket.gethostname()

    def _gone(self, trial: optuna.trial.FrozenTrial, now: datetime.datetime) -> bool:
        owner = trial.user_attrs.get(OWNER)
        if owner is None:
            return trial.datetime_start is not None and (now - trial.datetime_start).total_seconds() > self.grace_s
        host, _, pid = str(owner).rpartition(":")
        return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))


def _fail(study: optuna.Study, number: int) -> bool:
    """Fail a RUNNING trial; False when another worker finished or failed it first."""
    try:
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    return True


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs: exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state follows the command name in parentheses
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _status(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
