"""Upper bounds of recipe numbers: a typo such as ``epochs: 1000000000000`` is an error at
``validate``, not a run that never ends or a batch that never fits in memory.

Each bound is far above any sensible setting (the zoo's recipes use at most tens of epochs,
batches of hundreds and thousands of samples).
"""
from __future__ import annotations

#: Passes over a training split.
MAX_EPOCHS = 10_000
#: Optimizer steps, pruning steps, batches, sweeps and other per-stage counts.
MAX_STEPS = 10_000_000
#: Rounds of an iterative method (pruning steps, rounding sweeps).
MAX_ROUNDS = 1_000
#: Samples drawn for calibration, evaluation or parity.
MAX_SAMPLES = 10_000_000
#: Samples in one batch.
MAX_BATCH = 65_536
#: Timed runs and warm-up runs of a latency measurement.
MAX_ITERATIONS = 100_000
#: Trials of a search study (the CLI's --trials has the same bound).
MAX_TRIALS = 1_000_000
#: Random seeds (numpy takes 32 bits; stage seeds are derived as seed * 1000 + index).
MAX_SEED = 2**32 - 1
