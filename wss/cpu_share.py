"""TensorFlow thread pools for training processes that share one machine's CPU cores.

TensorFlow sizes its intra-op and inter-op thread pools to every core of the machine. When
`benchmarks/quality.py --parallel=N` or `launch/sweep.py --max_parallel=N` runs N trainings on
the CPU at once, N such processes oversubscribe the cores N times over and spend the difference
switching threads. Measured on 2 cores (2026-12-02, two PseudoSeg runs of `random_colours` side
by side, 200 steps): 36 images per second each with TensorFlow's pools, 45 with one intra-op
and two inter-op threads each, 48 with one of each (+33%). A single run alone is faster with
TensorFlow's own pools than with one thread of each (64 against 51 images per second), and
faster still with half the cores per op and two ops at once (`training_thread_pools`, which
`wss.train` and `wss.pretrain` use on the CPU): PseudoSeg's labelled and strong-view passes are
independent until the update, and TensorFlow's own pools, with every core for each of them,
oversubscribe the cores. Measured on 2 cores (2026-12-02, the demo network, batch 8 + 8,
`benchmarks/bench_thread_pools.py`; table in `docs/performance.md`, "CPU thread pools"): a
PseudoSeg step 0.268 s against 0.336 s at crop 97 and 0.146 against 0.203 s at crop 65, a
supervised one 0.092 against 0.106 s at crop 65, pretraining 412 against 354 images per
second.

This module imports nothing but `os`: launchers use it without starting TensorFlow.
"""

import os

INTRA_OP_VARIABLE = "TF_NUM_INTRAOP_THREADS"
INTER_OP_VARIABLE = "TF_NUM_INTEROP_THREADS"


def available_cores():
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def shared_cpu_environment(processes, environ=None, cores=None):
    """The environment of one of `processes` TensorFlow processes sharing the CPU cores.

    Both thread pools get an equal share of the cores (at least one thread). A pool size the
    user already set in the environment is kept.

    Args:
      processes: how many such processes run at once.
      environ: the environment to start from (default: this process's).
      cores: the cores to share (default: `available_cores()`).

    Returns:
      A new dict; `environ` unchanged when `processes` is 1 or less.
    """
    env = dict(os.environ if environ is None else environ)
    if processes <= 1:
        return env
    share = str(max(1, (cores or available_cores()) // processes))
    for variable in (INTRA_OP_VARIABLE, INTER_OP_VARIABLE):
        env.setdefault(variable, share)
    return env


def training_thread_pools(cores=None):
    """Thread-pool sizes for one training process that has the CPU cores to itself.

    Half the cores per op (intra-op) and two ops at once (inter-op), so that two independent
    passes of a step (PseudoSeg's labelled and strong-view passes, a convolution's input and
    kernel gradients) run side by side without oversubscribing the cores. Measured on 2 cores
    only (module docstring); `TF_NUM_INTRAOP_THREADS` / `TF_NUM_INTEROP_THREADS` override it.

    Args:
      cores: the cores of the process (default: `available_cores()`).

    Returns:
      (intra_op_threads, inter_op_threads).
    """
    cores = cores or available_cores()
    return max(1, cores // 2), min(2, cores)
