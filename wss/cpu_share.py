"""TensorFlow thread pools for training processes that share one machine's CPU cores.

TensorFlow sizes its intra-op and inter-op thread pools to every core of the machine. When
`benchmarks/quality.py --parallel=N` or `launch/sweep.py --max_parallel=N` runs N trainings on
the CPU at once, N such processes oversubscribe the cores N times over and spend the difference
switching threads. Measured on 2 cores (2026-12-02, two PseudoSeg runs of `random_colours` side
by side, 200 steps): 36 images per second each with TensorFlow's pools, 45 with one intra-op
and two inter-op threads each, 48 with one of each (+33%). A single run alone is fastest with
TensorFlow's own pools (64 against 51 images per second with one thread of each), so this is for
concurrent processes only.

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
