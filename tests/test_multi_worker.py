"""MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1, via launch/multi_worker.py.

Both workers run `launch/multi_worker.py --hosts=127.0.0.1:P0,127.0.0.1:P1 --index=I` (which
execs `python -m wss.train --strategy=multi_worker` with its TF_CONFIG) for three steps of the
tiny configuration on the CPU. Each worker writes `worker_results/worker_I.json` (step and
weight digests, `wss.training.trainer._write_worker_result`); the trainable weights must be
identical.
Processes are killed on failure or timeout.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from script_loading import load_script
from tiny_runs import tiny_bindings

from wss.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "multi_worker.py")
TIMEOUT_S = 240


def _load_launcher():
    return load_script("launch/multi_worker.py")


def _free_ports(count):
    """Ports the kernel hands out on 127.0.0.1 (held together so that they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.time() + 5
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(path, lines=30):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def test_launcher_builds_tf_config_and_rejects_bad_flags():
    launcher = _load_launcher()
    hosts = launcher.parse_hosts("10.0.0.1:2222, 10.0.0.2:2222")
    config = json.loads(launcher.tf_config(hosts, 1))
    assert config == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                      "task": {"type": "worker", "index": 1}}
    assert launcher.train_command("python", ["--gin_file=a.gin"])[-1] == "--strategy=multi_worker"
    with pytest.raises(ValueError, match="--hosts.*'h0' is not host:port"):
        launcher.parse_hosts("h0,h1:2")
    with pytest.raises(ValueError, match="--index=2 is outside 0..1"):
        launcher.tf_config(hosts, 2)
    with pytest.raises(ValueError, match="--strategy=mirrored"):
        launcher.train_command("python", ["--strategy=mirrored"])

    printed = subprocess.run(
        [sys.executable, LAUNCHER, "--hosts=h0:1,h1:1", "--print_commands", "--",
         "--gin_file=voc_semi.gin", "--logdir=gs://b/run"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    commands = [line for line in printed.splitlines() if not line.startswith("#")]
    assert len(commands) == 2
    assert all("-m wss.train --gin_file=voc_semi.gin --logdir=gs://b/run "
               "--strategy=multi_worker" in c for c in commands)
    assert '"index":1' in commands[1]
    failed = subprocess.run([sys.executable, LAUNCHER, "--hosts=h0:x", "--index=0", "--",
                             "--gin_file=a.gin"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and "--hosts: 'h0:x' is not host:port" in failed.stderr


@pytest.mark.slow
def test_two_workers_on_loopback_end_with_identical_weights(tmp_path):
    data_dir = str(tmp_path / "data")
    synthetic.generate(data_dir, seed=3, num_train=64, num_val=6, height=40, width=40)
    logdir = tmp_path / "run"
    # Three steps with a checkpoint at step 2: `wss.train` runs `after_training` on every
    # worker, which needs a checkpoint in LOGDIR; the chief writes ckpt-2 before the step-3
    # all-reduce, so it exists when worker 1 gets there (the chief may still be saving ckpt-3).
    bindings = tiny_bindings(data_dir, mode="supervised", steps=3, extra=[
        "train.image_summary_every = 0", "train.checkpoint_every = 2",
        "after_training.evaluate = False", "after_training.export = False"])
    train_args = ["--gin_file=demo.gin", f"--logdir={logdir}"]
    train_args += [f"--gin_bindings={b}" for b in bindings]
    hosts = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(
                   p for p in [REPO, os.environ.get("PYTHONPATH")] if p))
    env.pop("TF_CONFIG", None)
    processes, logs = [], []
    try:
        for index in range(2):
            log_path = str(tmp_path / f"worker_{index}.log")
            logs.append(log_path)
            with open(log_path, "w") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, LAUNCHER, f"--hosts={hosts}", f"--index={index}", "--",
                     *train_args],
                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path)))
        deadline = time.time() + TIMEOUT_S
        while any(p.poll() is None for p in processes):
            failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
            if failed:
                pytest.fail(f"worker {failed[0]} exited with {processes[failed[0]].returncode}:"
                            f"\n{_tail(logs[failed[0]])}")
            if time.time() > deadline:
                pytest.fail(f"workers still running after {TIMEOUT_S} s:\n"
                            + "\n".join(_tail(path) for path in logs))
            time.sleep(0.5)
        for index, process in enumerate(processes):
            assert process.returncode == 0, _tail(logs[index])
    finally:
        _stop(processes)

    results = [json.loads((logdir / "worker_results" / f"worker_{i}.json").read_text())
               for i in range(2)]
    assert [r["step"] for r in results] == [3, 3]
    assert results[0]["num_trainable"] > 0
    assert results[0]["sha256_trainable"] == results[1]["sha256_trainable"]
    assert (logdir / "ckpt-3.index").exists()  # The chief's checkpoint.
    assert not (logdir / ".worker_worker_1").exists()  # The other worker's copy is removed.
    assert "2 replica(s)" in Path(logs[0]).read_text()
