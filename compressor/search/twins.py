"""One configuration, one evaluation, however many workers sample it.

A trial whose configuration (its ``config`` digest) another trial already evaluated reuses that
result instead of running it again. Lower-numbered trials go first: a trial waits while a
lower-numbered RUNNING trial has not written its digest yet, or runs the same configuration.
Each trial writes its digest before it looks at the others', so of two workers that sample one
configuration at once, the later-numbered one always sees the earlier and waits for it (a bakery
ordering by trial number: no lock, no deadlock). When the earlier one's worker dies, recovery
fails that trial and the waiting one evaluates the configuration itself.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

if TYPE_CHECKING:
    from compressor.search.workers import Recovery

#: Seconds between looks at the trials a waiting trial waits for.
POLL_S = 0.5
_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def earlier_twin(study: optuna.Study, number: int, digest: str,
                 recover: "Recovery") -> optuna.trial.FrozenTrial | None:
    """The finished trial of configuration ``digest`` that trial ``number`` should copy, or None
    when it is the one to evaluate it. ``recover`` runs between looks (dead workers' trials);
    trials whose death it could not notice (another host, no heartbeat) are not waited for."""
    while True:
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state in _DONE and t.number != number and t.user_attrs.get("config") == digest \
                    and "duplicate_of" not in t.user_attrs:
                return t
        if not any(t.state == TrialState.RUNNING and t.number < number
                   and t.user_attrs.get("config", digest) == digest and recover.watches(t) for t in trials):
            return None
        time.sleep(POLL_S)
        recover(study)
