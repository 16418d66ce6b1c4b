"""Concurrent CPU training processes split the cores' TensorFlow thread pools."""

import os

from script_loading import load_script

from wss import cpu_share

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_each_process_gets_its_share_of_the_cores():
    env = cpu_share.shared_cpu_environment(2, {"PATH": "/bin"}, cores=2)
    assert env == {"PATH": "/bin", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    env = cpu_share.shared_cpu_environment(3, {}, cores=16)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "5"
    # More processes than cores: still one thread each, never zero.
    assert cpu_share.shared_cpu_environment(8, {}, cores=2)["TF_NUM_INTRAOP_THREADS"] == "1"


def test_a_single_process_and_the_users_settings_are_left_alone():
    base = {"TF_NUM_INTRAOP_THREADS": "4"}
    assert cpu_share.shared_cpu_environment(1, {}, cores=2) == {}
    env = cpu_share.shared_cpu_environment(2, base, cores=8)
    assert env == {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "4"}
    assert base == {"TF_NUM_INTRAOP_THREADS": "4"}  # A copy, not the caller's dict.
    assert cpu_share.available_cores() >= 1


def test_sweep_trials_on_the_cpu_share_the_cores(monkeypatch):
    load_script("launch/sweep.py", name="sweep_for_cpu_share")  # Puts launch/ on the path.
    from sweeps import scheduler

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    share = str(max(1, cpu_share.available_cores() // 2))
    cpu = scheduler._child_environment(None, processes=2)
    assert (cpu["TF_NUM_INTRAOP_THREADS"], cpu["TF_NUM_INTEROP_THREADS"]) == (share, share)
    alone = scheduler._child_environment(None)
    assert "TF_NUM_INTRAOP_THREADS" not in alone
    # A GPU slot keeps TensorFlow's own pools (not measured for GPU trials).
    gpu = scheduler._child_environment("0,1", processes=2)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "0,1" and "TF_NUM_INTRAOP_THREADS" not in gpu


def test_a_training_process_alone_gets_half_the_cores_per_op_and_two_ops_at_once():
    assert cpu_share.training_thread_pools(cores=2) == (1, 2)
    assert cpu_share.training_thread_pools(cores=16) == (8, 2)
    assert cpu_share.training_thread_pools(cores=1) == (1, 1)
    intra, inter = cpu_share.training_thread_pools()
    assert intra >= 1 and 1 <= inter <= 2


_CONFIGURE_SCRIPT = """
import json
import tensorflow as tf
from wss import cpu_share
from wss.training import strategy
results = {
    "user_set": strategy.configure_cpu_threads("mirrored", {"TF_NUM_INTEROP_THREADS": "3"}),
    "tpu": strategy.configure_cpu_threads("tpu"),
    "set": strategy.configure_cpu_threads(),
    "pools": [tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads()],
    "expected": cpu_share.training_thread_pools(),
}
print(json.dumps(results))
"""

_TOO_LATE_SCRIPT = """
import json
import tensorflow as tf
from wss.training import strategy
tf.constant(1.0) + 1.0  # TensorFlow runs with its own pools: they can no longer change.
print(json.dumps({"too_late": strategy.configure_cpu_threads(),
                  "intra": tf.config.threading.get_intra_op_parallelism_threads()}))
"""


def test_training_sizes_the_thread_pools_on_the_cpu_before_tensorflow_runs():
    import json
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items()
           if key not in (cpu_share.INTRA_OP_VARIABLE, cpu_share.INTER_OP_VARIABLE)}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")

    def run(script):
        completed = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                                   capture_output=True, text=True, timeout=300, check=True)
        return json.loads(completed.stdout.strip().splitlines()[-1])

    results = run(_CONFIGURE_SCRIPT)
    assert results["user_set"] is None and results["tpu"] is None
    assert results["set"] == results["expected"] == results["pools"]
    # Called after TensorFlow started: a warning and TensorFlow's own pools, not an error.
    assert run(_TOO_LATE_SCRIPT) == {"too_late": None, "intra": 0}
