"""Probe: would a teacher made of several runs, or seen at several scales, label better?

PseudoSeg with unlabelled images pays in proportion to how many objects its teacher names right
(README, "Why PseudoSeg with unlabelled images does not pay here"). `demo.gin`'s teacher is one
supervised 1/16 run whose softmax is averaged with its mirror image's
(`PseudoSegObjective.teacher_mirror`). This probe scores, on the validation images of the runs'
own config at full resolution (inference mode, each image padded to the aligned size as
`wss.evaluate` pads it), the labels of:

- each run alone, and with the mirror average;
- each run averaged over `--scales` (with and without the mirror), DeepLab's multi-scale test;
- the ensemble: the mean softmax of all the runs (`--run_dir` and `--ensemble_runs`: runs of the
  same config, e.g. other seeds, or checkpoint prefixes of one run, a snapshot ensemble), with
  and without the mirror.

Each row gives the pixel accuracy, mIoU and the accuracy on foreground pixels (the share of the
objects' pixels named with their class: what the nineteenth session's curve ties to the gap
PseudoSeg closes, `benchmarks/RESULTS.md`).

Run: `python benchmarks/probe_teacher_ensemble.py --run_dir RUN --ensemble_runs RUN2 RUN3
[--scales 0.75,1,1.25]`. `benchmarks/noisy_masks.py --teacher_runs` writes such an ensemble's
labels as a dataset's unlabelled masks, to train a student on them.
"""

import argparse

import numpy as np
from probe_pseudo_labels import parse_floats, print_label_scores, restore_run, score_labels

from wss import experiment
from wss.data import pipeline
from wss.evaluation import evaluator


def restore_ensemble(run_dirs):
    """Restores the runs of one config (the first run's config builds every model).

    Args:
      run_dirs: `wss.train` log directories or checkpoint prefixes; the first must be a log
        directory (its config is parsed).

    Returns:
      (models, number of classes, the first run's validation spec, restored checkpoint paths).

    Raises:
      wss.training.checkpointing.CheckpointMismatchError: for a run of another model config.
    """
    model, _, checkpoint, num_classes, spec = restore_run(run_dirs[0])
    models, checkpoints = [model], [checkpoint]
    for run_dir in run_dirs[1:]:
        member, head = experiment.build_models(num_classes=num_classes)
        checkpoints.append(experiment.restore_models(run_dir, member, head))
        models.append(member)
    return models, num_classes, spec, checkpoints


def ensemble_probabilities(models, images, scales=(1.0,), flip=False):
    """The mean over `models` of their softmax at the images' resolution.

    Args:
      models: DeepLab models of one config.
      images: float32 `[B, H, W, 3]` in [0, 255].
      scales: image scales each model sees (`wss.evaluation.evaluator.predict_probabilities`).
      flip: also average the mirror image's softmax, mirrored back.

    Returns:
      float32 `[B, H, W, C]` probabilities.
    """
    total = 0.0
    for model in models:
        total += evaluator.predict_probabilities(model, images, scales=scales, flip=flip)
    return total / float(len(models))


def _one_view(model, images, scale, mirrored):
    """One model's numpy softmax at one scale, of the image or (mirrored back) its mirror."""
    if mirrored:
        images = images[:, :, ::-1]
    probs = evaluator.predict_probabilities(model, images, scales=(scale,)).numpy()
    return probs[:, :, ::-1] if mirrored else probs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a wss.train log directory")
    parser.add_argument("--ensemble_runs", nargs="*", default=(),
                        help="more runs (log directories or checkpoints) of the same config")
    parser.add_argument("--scales", type=parse_floats, default=(0.75, 1.0, 1.25),
                        help="the multi-scale rows' scales")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

    models, num_classes, spec, checkpoints = restore_ensemble(
        [args.run_dir] + list(args.ensemble_runs))
    rows = {}
    for index in range(len(models)):
        rows[f"run {index}"] = ([index], (1.0,), False)
        rows[f"run {index}, mirror"] = ([index], (1.0,), True)
        rows[f"run {index}, scales {args.scales}"] = ([index], args.scales, False)
        rows[f"run {index}, scales {args.scales}, mirror"] = ([index], args.scales, True)
    if len(models) > 1:
        everyone = list(range(len(models)))
        rows["ensemble"] = (everyone, (1.0,), False)
        rows["ensemble, mirror"] = (everyone, (1.0,), True)

    sums = {}
    for batch in pipeline.eval_dataset(spec, num_classes, batch_size=args.batch_size):
        labels = batch["label"].numpy()
        passes = {}  # One forward pass per (model, scale, mirrored), shared by the rows.
        for name, (members, scales, flip) in rows.items():
            views = [(member, scale, mirrored) for member in members for scale in scales
                     for mirrored in ((False, True) if flip else (False,))]
            for member, scale, mirrored in views:
                if (member, scale, mirrored) not in passes:
                    passes[(member, scale, mirrored)] = _one_view(
                        models[member], batch["image"], scale, mirrored)
            probs = np.mean([passes[view] for view in views], axis=0)
            score_labels(sums, name, probs.argmax(axis=-1), labels, num_classes)

    print("\nruns: " + ", ".join(f"{index}: {path}" for index, path in enumerate(checkpoints)))
    print()
    print_label_scores(sums)


if __name__ == "__main__":
    main()
