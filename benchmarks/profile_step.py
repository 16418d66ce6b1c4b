"""Where a training step's time goes: op families from a TensorFlow profiler trace.

    python benchmarks/profile_step.py [--crop 129] [--batch 4] [--steps 3]
        [--rows supervised,pseudoseg] [--reference_dir /tmp/wss_ref] [--top 12]
        [--logdir /tmp/wss_profile] [--small]

Builds the same steps as `benchmarks/bench_train_step.py` (full Xception-65 DeepLabv3+, OS 16,
constant random batches; with `--reference_dir` also the reference's TF1 graphs, see
`benchmarks/bench_reference_step.py`), times each without the profiler (median of `--steps`
after 2 warm-up steps), then records `--steps` more under `tf.profiler.experimental` and reads
the trace (`*.xplane.pb`) back: every executed op, grouped by op type and by family
(convolutions with matrix products, as wss computes 1x1 convolutions; depthwise
convolutions; batch norm; element-wise; copies and layout; ...).
TensorFlow runs up to two ops at once on 2 cores (inter-op parallelism), and two concurrent
ops each take about twice as long as alone, so summed op durations overstate the ops that
overlap (the backward pass, where the input and filter gradients of a layer run side by
side). Times here are therefore wall-time shares: every instant of the trace is split equally
among the ops running then, and the shares add up to the time any op was running. The trace
also splits the backward pass off (ops under `gradient_tape/` in wss, `gradients/` in the TF1
graphs).

FLOPs are counted from the kernels and output shapes of one forward pass of the model on the
batch (2 x multiply-adds of every convolution, 1x1 and depthwise ones included, as the network
defines them, whichever op computes them), a backward pass as twice its forward, and the
passes of each step:

* wss supervised: labelled forward + backward = 3 F;
* wss PseudoSeg: weak view forward, labelled and strong forward + backward = 7 F;
* reference supervised: 3 F;
* reference PseudoSeg: 7 F as wss plus the inference-mode backbone pass for Grad-CAM (B) and
  the labelled backbone pass for L_x with its backward (3 B) = 7 F + 4 B.

The attention of the SGC head and Grad-CAM are not counted (under 0.1% at these sizes).
"""

import argparse
import collections
import glob
import os
import re
import shutil
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models  # noqa: E402
import bench_train_step  # noqa: E402

_OP_EVENT = re.compile(r"^(?P<name>[^:]+):(?P<type>[A-Za-z0-9_]+)$")
# Function-call and control-flow ops enclose the ops they run; counting them would count twice.
_ENCLOSING = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
              "StatelessIf", "Case", "StatelessCase"}
_COPIES = {"Pad", "PadV2", "ConcatV2", "Concat", "Slice", "StridedSlice", "StridedSliceGrad",
           "Transpose", "Reshape", "Identity", "IdentityN", "Pack", "Unpack", "Split", "SplitV",
           "Tile", "Fill", "ZerosLike", "OnesLike", "Shape", "ShapeN", "Squeeze", "ExpandDims",
           "GatherV2", "BroadcastTo", "BroadcastArgs", "Select", "SelectV2", "MklToTf", "ToTf",
           "Range", "ConcatOffset", "Size", "Rank", "Const", "_Retval", "_Arg", "Snapshot",
           "TensorScatterUpdate", "ScatterNd", "SpaceToBatchND", "BatchToSpaceND"}
_REDUCTIONS = {"Sum", "Mean", "Max", "Min", "Prod", "AddN", "L2Loss", "ArgMax", "All", "Any",
               "BiasAddGrad", "Unique", "UniqueWithCounts"}
_VARIABLES = {"ReadVariableOp", "AssignVariableOp", "AssignSubVariableOp", "AssignAddVariableOp",
              "VarHandleOp", "VarIsInitializedOp", "ResourceApplyKerasMomentum",
              "ResourceApplyMomentum", "ApplyMomentum", "ResourceApplyGradientDescent",
              "ResourceApplyAdam", "AssignSub", "AssignAdd", "Assign", "VariableV2"}
FAMILIES = ("convolution", "depthwise convolution", "batch norm", "element-wise",
            "copies and layout", "reductions", "resize", "softmax and losses",
            "variables and optimizer", "other")


def op_family(op_type):
    """The family of an op type (oneDNN's `_Mkl*` variants count as their base op)."""
    base = re.sub(r"^_(MklNative|Mkl)?", "", op_type)
    if "Depthwise" in base:
        return "depthwise convolution"
    if base.startswith(("Conv2D", "FusedConv2D", "Conv3D", "PadWithConv2D",
                        "PadWithFusedConv2D")) or "MatMul" in base or base.startswith("Einsum"):
        return "convolution"  # With matrix products: wss computes 1x1 convolutions as such.
    if "BatchNorm" in base:
        return "batch norm"
    if base.startswith("Resize"):
        return "resize"
    if "Softmax" in base or "CrossEntropy" in base or base in ("Sigmoid", "SigmoidGrad"):
        return "softmax and losses"
    if base in _VARIABLES:
        return "variables and optimizer"
    if base in _COPIES:
        return "copies and layout"
    if base in _REDUCTIONS:
        return "reductions"
    if base in _ENCLOSING:
        return None
    if base[:1].isupper():
        return "element-wise"
    return "other"


def read_trace(logdir):
    """Op events of the newest trace under `logdir`: `[(op name, op type, seconds, share)]`.

    `seconds` is the op's duration; `share` its part of the wall time: every instant is split
    equally among the ops running then, so shares add up to the time any op was running
    (concurrent ops on 2 cores each take longer than alone, and would count twice).
    """
    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")),
                   key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                match = _OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match and match["type"] not in _ENCLOSING:
                    start = line.timestamp_ns * 1000 + event.offset_ps
                    events.append([match["name"], match["type"], start, event.duration_ps])
    shares = _wall_shares([(start, start + duration) for _, _, start, duration in events])
    return [(name, op_type, duration * 1e-12, share * 1e-12)
            for (name, op_type, _, duration), share in zip(events, shares)]


def _wall_shares(intervals):
    """Splits every instant equally among the intervals covering it; the part of each."""
    points = sorted({t for interval in intervals for t in interval})
    index = {t: i for i, t in enumerate(points)}
    delta = [0] * (len(points) + 1)  # Intervals open over each elementary segment.
    for start, end in intervals:
        delta[index[start]] += 1
        delta[index[end]] -= 1
    per_unit, active = [0.0] * len(points), 0  # Share of one interval per ps, by segment.
    for i in range(len(points) - 1):
        active += delta[i]
        per_unit[i] = 1.0 / active if active else 0.0
    prefix = [0.0]  # Cumulative share per interval up to each point.
    for i in range(len(points) - 1):
        prefix.append(prefix[-1] + per_unit[i] * (points[i + 1] - points[i]))
    return [prefix[index[end]] - prefix[index[start]] for start, end in intervals]


def profile(step, steps, logdir):
    """Runs `steps` calls of `step` under the profiler; returns the op events."""
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(steps):
            step()
    finally:
        tf.profiler.experimental.stop()
    return read_trace(logdir)


def step_flops(row, forward):
    """FLOPs of one step by kind, from one forward pass's `conv_flops` (see module doc)."""
    full = collections.Counter()
    backbone = collections.Counter()
    for (part, kind), value in forward.items():
        full[kind] += value
        if part == "backbone":
            backbone[kind] += value
    passes = {"supervised": (3, 0), "pseudoseg": (7, 0), "reference_supervised": (3, 0),
              "reference_pseudoseg": (7, 4)}.get(row)
    if passes is None:  # The benchmark's extra rows: not counted.
        return {}
    return {kind: passes[0] * full[kind] + passes[1] * backbone[kind] for kind in full}


def summarise(title, events, steps, wall, flops, top):
    """Prints the family and op-type tables of one profiled row."""
    by_family = collections.Counter()
    summed = collections.Counter()
    by_type = collections.Counter()
    counts = collections.Counter()
    backward = 0.0
    op_time = 0.0
    for name, op_type, seconds, share in events:
        family = op_family(op_type)
        if family is None:
            continue
        op_time += seconds / steps
        by_family[family] += share / steps
        summed[family] += seconds / steps
        by_type[op_type] += share / steps
        counts[op_type] += 1
        if "gradient_tape/" in name or "gradients/" in name or name.startswith("gradients"):
            backward += share / steps
    total = sum(by_family.values())
    total_flops = sum(flops.values())
    print(f"\n### {title}\n")
    print(f"Wall {wall * 1e3:.0f} ms per step (no profiler); ops ran {total * 1e3:.0f} ms per "
          f"step under the profiler (summed op durations {op_time * 1e3:.0f} ms, "
          f"{op_time / total:.2f} ops at a time), {backward / total:.0%} of it in the backward "
          f"pass; {len(events) / steps:.0f} ops per step"
          + (f"; {total_flops / 1e9:.1f} GFLOP of convolutions per step = "
             f"{total_flops / wall / 1e9:.0f} GFLOP/s of wall time" if total_flops else "")
          + ".\n")
    print("| op family | ms per step (wall share) | share | summed op ms | GFLOP per step |")
    print("| --- | --- | --- | --- | --- |")
    for family in FAMILIES:
        if by_family[family] == 0:
            continue
        gflop = f"{flops[family] / 1e9:.1f}" if flops.get(family) else ""
        print(f"| {family} | {by_family[family] * 1e3:.1f} | {by_family[family] / total:.1%} "
              f"| {summed[family] * 1e3:.1f} | {gflop} |")
    print("\n| top op types | ms per step | share | calls per step |\n| --- | --- | --- | --- |")
    for op_type, seconds in by_type.most_common(top):
        print(f"| {op_type} | {seconds * 1e3:.1f} | {seconds / total:.1%} | "
              f"{counts[op_type] / steps:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=129)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", default="supervised,pseudoseg",
                        help="rows of bench_train_step.ROWS; the reference has the first two")
    parser.add_argument("--reference_dir", default=None)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--logdir", default="/tmp/wss_profile")
    parser.add_argument("--small", action="store_true", help="the demo's narrow model")
    args = parser.parse_args()
    model, head = bench_train_step.build_models(args.crop, args.small)
    labelled, unlabelled = bench_train_step.random_batches(args.batch, args.crop)
    forward = bench_models.conv_flops(model, labelled["image"])
    rows = args.rows.split(",")
    steps = {row: bench_train_step.make_step(row, model, head, labelled, unlabelled)
             for row in rows}
    if args.reference_dir:
        reference = bench_train_step._reference(args.reference_dir)
        for row in rows:
            if row in ("supervised", "pseudoseg"):
                steps[f"reference_{row}"] = reference.build(row, args.crop, args.batch).run
    print(f"Profile, {'narrow' if args.small else 'full'} Xception-65 DeepLabv3+ OS 16, crop "
          f"{args.crop}, batch {args.batch} (+ {args.batch}), TF {tf.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPU cores, {args.steps} profiled steps per row")
    for key, step in steps.items():
        wall = statistics.median(bench_train_step.time_steps(step, 2, args.steps))
        events = profile(step, args.steps, os.path.join(args.logdir, key))
        title = (f"reference TF1 {key.split('_', 1)[1]}" if key.startswith("reference_")
                 else f"wss {bench_train_step.ROWS[key][0]}")
        summarise(title, events, args.steps, wall, step_flops(key, forward), args.top)


if __name__ == "__main__":
    main()
