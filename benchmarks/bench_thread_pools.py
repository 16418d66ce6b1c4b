"""Training-step time of the demo network under different CPU thread pools.

    python benchmarks/bench_thread_pools.py [--crops 97,65] [--pools default,1x2,1x1]
        [--steps 8] [--rounds 3]

`wss.train` and `wss.pretrain` size TensorFlow's thread pools themselves on a CPU-only machine
(`wss.training.strategy.configure_cpu_threads`: half the cores per op, two ops at once). This
measures why: for each pool setting (`default` is TensorFlow's own, `AxB` is A intra-op and B
inter-op threads) a fresh process builds the demo network of `demo_model.gin` (width 0.25, 2
middle-flow units, output stride 8, ASPP rates 2/4/6, 11 classes) and times, on constant random
batches of 8 (+ 8), a supervised step (L_s, L_x, L_sa), a PseudoSeg step (semi mode) and an
inference forward pass, each after 3 warm-up steps, over interleaved rounds. The table gives
the median and the ratio to TensorFlow's own pools. Thread pools are fixed when TensorFlow
starts, hence one process per setting; compare the ratios of one run, not times across runs.
"""

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, statistics, sys, time
import tensorflow as tf
from wss.method import sgc
from wss.method.objective import PseudoSegObjective
from wss.models import build_deeplab
from wss.training import optim
sys.path.insert(0, {benchmarks!r})
from bench_train_step import random_batches

classes, crop, batch, steps, rounds = 11, {crop}, 8, {steps}, {rounds}
model = build_deeplab(num_classes=classes, width_multiplier=0.25, middle_flow_units=2,
                      output_stride=8, atrous_rates=(2, 4, 6), batch_norm_decay=0.99)
head = sgc.make_sgc_head(classes, attention_dim=16, bn_momentum=0.99)
features = model(tf.zeros([1, crop, crop, 3]))["features"]
sgc.sgc_logits(head, features["final"], features["penultimate"], tf.zeros([1, classes - 1]),
               classifier_kernel=model.classifier_kernel)
labelled, unlabelled = random_batches(batch, crop, classes)
rows = {{}}
for name, mode in (("supervised", "supervised"), ("pseudoseg", "semi")):
    objective = PseudoSegObjective(model, head, mode=mode)
    optimizer = optim.make_optimizer(1000, name="adam")
    optimizer.build(objective.trainable_variables)
    second = unlabelled if mode == "semi" else None

    @tf.function
    def step(objective=objective, optimizer=optimizer, second=second):
        return objective.train_step(optimizer, labelled, second)[0]["loss_total"]

    rows[name] = step
rows["inference"] = tf.function(lambda: model(labelled["image"], training=False)["logits"])
times = {{name: [] for name in rows}}
for run in rows.values():
    for _ in range(3):
        float(tf.reduce_sum(run()))
for _ in range(rounds):
    for name, run in rows.items():
        for _ in range(steps):
            start = time.perf_counter()
            float(tf.reduce_sum(run()))
            times[name].append(time.perf_counter() - start)
print(json.dumps({{name: statistics.median(t) for name, t in times.items()}}))
"""


def time_pools(pools, crop, steps, rounds):
    """Runs the timing child under one pool setting; returns `{row: median seconds}`."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    if pools != "default":
        intra, inter = pools.split("x")
        env.update(TF_NUM_INTRAOP_THREADS=intra, TF_NUM_INTEROP_THREADS=inter)
    code = _CHILD.format(benchmarks=os.path.dirname(os.path.abspath(__file__)), crop=crop,
                         steps=steps, rounds=rounds)
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"pools {pools}, crop {crop} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", default="97,65", help="comma-separated crop sizes")
    parser.add_argument("--pools", default="default,1x2,1x1",
                        help="comma-separated settings: default or INTRAxINTER")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per row per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"Demo network, batch 8 (+ 8), {cores} CPU cores, median of {args.rounds} x "
          f"{args.steps} steps after 3 warm-up steps, one process per setting\n")
    print("| crop | pools (intra x inter) | supervised s | PseudoSeg s | inference s "
          "| PseudoSeg vs default |")
    print("| --- | --- | --- | --- | --- | --- |")
    for crop in (int(c) for c in args.crops.split(",")):
        results = {pools: time_pools(pools, crop, args.steps, args.rounds)
                   for pools in args.pools.split(",")}
        base = results.get("default")
        for pools, row in results.items():
            ratio = f"{row['pseudoseg'] / base['pseudoseg']:.2f}x" if base else ""
            print(f"| {crop} | {pools} | {row['supervised']:.3f} | {row['pseudoseg']:.3f} "
                  f"| {row['inference']:.3f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
