"""Offline pseudo labels for PseudoSeg: a frozen teacher's labels with its objects renamed.

With `train.offline_pseudo_labels = True` (semi mode; `demo.gin`) a run does not make its
pseudo labels online from the weak view. Before it trains, its supervised teacher
(`train.teacher_checkpoint`, e.g. `@supervised_teacher`, `wss.method.teacher_stage`) predicts
every unlabelled image once at full resolution, averaged with its mirror image, and each of its
objects is renamed by what the pretrained classifier (the run's warm start,
`train.init_checkpoint`), fine-tuned on the labelled images' objects, sees in its crop
(`wss.method.object_naming.CropNamer`, `wss.method.crop_classifier`). The labels are written into
`LOGDIR/pseudo_labels/` as the self-training baseline's are (`wss.method.self_training`: the
unlabelled images' bytes with the labels as their masks, a completion marker, reuse on resume),
and the unlabelled stream reads them: each step trains L_u on the strong view (colour jitter and
CutOut, no geometric change) towards the label of its image, one-hot, as the online frozen
teacher's hard labels are; L_s, L_x and L_sa are the paper's. The student skips the weak view's
passes, so a step is cheaper than with the online teacher.

With `offline_pseudo_labels.rounds = N > 1` the teacher of the labels is round N - 1 of the
same run instead: this run's config with `rounds = N - 1`, trained first (in a `python -m
wss.train` subprocess, as the supervised teacher stage is) into `LOGDIR/round_<N-1>` and reused
once it has finished. Round 1 is labelled by `train.teacher_checkpoint`. Each round's student
starts from `train.init_checkpoint` again and trains `train.num_steps`; only its labels come from
the round before. `offline_pseudo_labels.round_steps` gives each round its own number of steps
(its own poly schedule), and `offline_pseudo_labels.continue_rounds = True` starts each round
after the first from the final weights of the round before instead (all of them, logits
included; a fresh optimizer): `demo.gin` trains round 1 for 1000 steps, relabels with it, and
continues for 500, the steps of one round split over two.
`offline_pseudo_labels.start_from_teacher = True` starts round 1 from every weight of the
teacher's final checkpoint instead of the warm start (measured with 500 + 500 steps and not
adopted: better on `shapes`, worse on `random_colours` and `held_out`, benchmarks/RESULTS.md,
thirty-seventh session).

Why (benchmarks/RESULTS.md, twenty-ninth to thirty-first sessions): the student follows how many
objects its labels name right, and the teacher, fine-tuned on a few scenes, names many wrong;
the renaming lifts the unlabelled foreground named right by 10 points on two of the synthetic
sets, and a student trained on those labels names more right again than its teacher did.
"""

import collections
import concurrent.futures
import inspect
import json
import os
import subprocess
import sys
import time

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from wss import config as config_lib
from wss import run_files
from wss.data.records import IGNORE_LABEL
from wss.method import crop_classifier, object_naming, self_training

# The gin config an earlier round is trained with, written into its directory.
ROUND_CONFIG_FILENAME = "round.gin"


def round_dir(logdir, round_number):
    """Where a run with `offline_pseudo_labels.rounds > round_number` trains that round."""
    return os.path.join(logdir, f"round_{round_number}")


def _finished(directory):
    """Whether the run in `directory` has finished (its result file says so)."""
    path = os.path.join(directory, run_files.RESULT_FILENAME)
    if not tf.io.gfile.exists(path):
        return False
    with tf.io.gfile.GFile(path) as f:
        try:
            return bool(json.load(f).get("finished"))
        except ValueError:
            return False


# What `round_plan` tells the trainer and the task about this run's round: `round_steps` is
# every round's step count (None: each trains `train.num_steps`), `num_steps` this round's.
# `from_teacher`: this round starts from the teacher's final weights (`start_from_teacher`).
RoundPlan = collections.namedtuple("RoundPlan", ["rounds", "num_steps", "start_from",
                                                 "round_steps", "from_teacher"])


def _bound(name):
    """`offline_pseudo_labels.<name>` as bound in gin, else its default."""
    bindings = gin.get_bindings(prepare_offline_labels)
    if name in bindings:
        return bindings[name]
    return inspect.signature(prepare_offline_labels).parameters[name].default


def _check_per_round(binding, values, rounds, check):
    """Fails naming `binding` unless `values` holds one entry per round, each passing `check`."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{binding}={values!r}: expected one entry per round (a tuple, the "
                         f"first round's first), or None")
    if len(values) != rounds:
        raise ValueError(f"{binding}={tuple(values)!r} gives {len(values)} entries for "
                         f"offline_pseudo_labels.rounds = {rounds}: give one per round, the "
                         f"first round's first")
    for value in values:
        check(binding, value)


def split_steps(num_steps, rounds, round_steps=None, step_shares=None):
    """Every round's step count, from `round_steps` or `train.num_steps` split by shares.

    Args:
      num_steps: `train.num_steps`.
      rounds: `offline_pseudo_labels.rounds`.
      round_steps: one step count per round, or None.
      step_shares: one positive share per round, or None: `num_steps` split in these
        proportions (rounded so that the counts add up to `num_steps`).

    Returns:
      A tuple of `rounds` step counts, or None when both are None (each round trains
      `num_steps`).

    Raises:
      ValueError: naming the binding at fault (both given, a wrong length, a count or share
        that is not positive, or too few steps to give every round one).
    """
    if round_steps is not None and step_shares is not None:
        raise ValueError(f"offline_pseudo_labels.round_steps={round_steps!r} and "
                         f"offline_pseudo_labels.step_shares={step_shares!r} both set each "
                         f"round's steps: bind one of them")
    if round_steps is not None:
        _check_per_round("offline_pseudo_labels.round_steps", round_steps, rounds,
                         lambda binding, value: config_lib.check_int(binding, value, minimum=1))
        return tuple(int(steps) for steps in round_steps)
    if step_shares is None:
        return None
    _check_per_round("offline_pseudo_labels.step_shares", step_shares, rounds,
                     lambda binding, value: config_lib.check_number(
                         binding, value, minimum=0, exclusive_minimum=True))
    total = float(sum(step_shares))
    bounds = [0] + [round(num_steps * sum(step_shares[:k + 1]) / total) for k in range(rounds)]
    steps = tuple(int(bounds[k + 1] - bounds[k]) for k in range(rounds))
    if min(steps) < 1:
        raise ValueError(f"train.num_steps = {num_steps} split by offline_pseudo_labels."
                         f"step_shares={tuple(step_shares)!r} gives {steps}: a round without a "
                         f"step; bind more steps or fewer rounds")
    return steps


def round_plan(num_steps, logdir):
    """This run's round of the offline labels, from the `offline_pseudo_labels` bindings.

    Args:
      num_steps: `train.num_steps`.
      logdir: this run's log directory.

    Returns:
      A `RoundPlan`: `rounds` (this run is the last of them), `num_steps` (its entry of
      `split_steps`, else `train.num_steps`), `start_from` (the directory of the round
      before, whose final weights this round starts from, when `continue_rounds` is set and
      this is not round 1; else None: the warm start `train.init_checkpoint`) and
      `round_steps` (`split_steps`).

    Raises:
      ValueError: naming the binding at fault.
    """
    rounds = _bound("rounds")
    config_lib.check_int("offline_pseudo_labels.rounds", rounds, minimum=1)
    round_steps = split_steps(num_steps, rounds, _bound("round_steps"), _bound("step_shares"))
    continue_rounds = _bound("continue_rounds")
    config_lib.check_bool("offline_pseudo_labels.continue_rounds", continue_rounds)
    start_from_teacher = _bound("start_from_teacher")
    config_lib.check_bool("offline_pseudo_labels.start_from_teacher", start_from_teacher)
    steps = num_steps if round_steps is None else round_steps[rounds - 1]
    start_from = round_dir(logdir, rounds - 1) if continue_rounds and rounds > 1 else None
    return RoundPlan(rounds, steps, start_from, round_steps,
                     bool(start_from_teacher and rounds == 1))


def train_earlier_round(logdir, rounds, round_steps=None):
    """Trains round `rounds - 1` of this run once (resumed if interrupted) and returns its dir.

    The round is this process's gin config with `offline_pseudo_labels.rounds = rounds - 1`
    (and `round_steps` cut to its first `rounds - 1` entries, `step_shares` unbound) and no
    export, trained by
    `python -m wss.train` into `round_dir(logdir, rounds - 1)` (which itself trains its
    earlier rounds first, inside its own directory). A round that has finished is reused.

    Args:
      logdir: this run's log directory.
      rounds: this run's `offline_pseudo_labels.rounds` (at least 2).
      round_steps: every round's step count (`split_steps`), or None.

    Returns:
      The earlier round's log directory (its final checkpoint labels this run's images).

    Raises:
      RuntimeError: if the earlier round fails or stops before its last step (its output,
        printed above, says why; running this run again resumes it).
    """
    directory = round_dir(logdir, rounds - 1)
    if _finished(directory):
        print(f"Offline pseudo labels: round {rounds - 1} has finished; reusing {directory}",
              flush=True)
        return directory
    tf.io.gfile.makedirs(directory)
    config_path = os.path.join(directory, ROUND_CONFIG_FILENAME)
    config_lib.dump_config(config_path)
    command = [sys.executable, "-m", "wss.train", f"--gin_file={config_path}",
               f"--logdir={directory}",
               f"--gin_bindings=offline_pseudo_labels.rounds = {rounds - 1}",
               "--gin_bindings=after_training.export = False"]
    if round_steps is not None:  # Its own counts, however this run's were bound.
        earlier = tuple(int(steps) for steps in round_steps[:rounds - 1])
        command += [f"--gin_bindings=offline_pseudo_labels.round_steps = {earlier!r}",
                    "--gin_bindings=offline_pseudo_labels.step_shares = None"]
    print(f"Offline pseudo labels, round {rounds} of {rounds}: training round {rounds - 1} "
          f"(this config with offline_pseudo_labels.rounds = {rounds - 1}) in {directory}; its "
          f"final model labels this run's unlabelled images", flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise RuntimeError(f"round {rounds - 1} of the offline pseudo labels failed: "
                           f"{' '.join(command)}")
    if not _finished(directory):
        raise RuntimeError(f"round {rounds - 1} of the offline pseudo labels stopped before its "
                           f"last step ({directory}); run this command again to resume it")
    return directory


def labelled_background_share(labelled_spec, num_classes):
    """The share of background among the labelled masks' pixels (the ignore label left out).

    Raises:
      ValueError: naming the labelled images when they hold no labelled pixel.
    """
    from wss.data import pipeline

    background = total = 0
    for batch in pipeline.eval_dataset(labelled_spec, num_classes=num_classes, batch_size=1):
        if not bool(batch["has_mask"][0]):
            continue
        mask = batch["label"][0].numpy()
        known = mask != IGNORE_LABEL
        background += int(np.sum(mask[known] == 0))
        total += int(np.sum(known))
    if not total:
        raise ValueError(f"offline_pseudo_labels.match_background needs labelled masks; "
                         f"{pipeline.describe_spec(labelled_spec)} has no labelled pixel")
    return background / total


def _make_scorer(crop_scorer, classifier_checkpoint, num_classes, l2, fine_tune_steps,
                 fine_tune_learning_rate, fine_tune_seed, reuse_crop_scorer=False):
    """The `crop_classifier` scorer named by `offline_pseudo_labels.crop_scorer`."""
    if crop_scorer == "ridge":
        describe, description = crop_classifier.crop_describer(classifier_checkpoint)
        return crop_classifier.RidgeScorer(describe, num_classes, l2, description)
    return crop_classifier.FineTunedScorer(classifier_checkpoint, num_classes,
                                           steps=fine_tune_steps,
                                           learning_rate=fine_tune_learning_rate,
                                           seed=fine_tune_seed, reuse=reuse_crop_scorer)


def _crop_namer_factory(labelled_spec, num_classes, make_scorer, crop_size, temperature,
                        margin, min_pixels, min_confidence=0.0):
    """A `relabel_factory` for `self_training.prepare_pseudo_labels`: fits a `CropNamer`.

    Args:
      labelled_spec: the labelled images (their objects are the references).
      num_classes: classes including background.
      make_scorer: a function without arguments returning the crop scorer to fit.
      crop_size, temperature, margin, min_pixels, min_confidence: as
        `prepare_offline_labels`'s.

    Returns:
      A function without arguments returning `(namer, report)`. When the labelled images hold
      no object of `min_pixels` pixels it warns and gives no renaming (the teacher's labels
      are kept; the report says so under `crop_features`).
    """

    def factory():
        from wss.data import pipeline

        scorer = make_scorer()
        namer = object_naming.CropNamer(scorer, num_classes, crop_size, temperature, margin,
                                        min_pixels, min_confidence)
        examples = ((batch["image"][0].numpy(), batch["label"][0].numpy())
                    for batch in pipeline.eval_dataset(labelled_spec, num_classes=num_classes,
                                                       batch_size=1)
                    if bool(batch["has_mask"][0]))
        start = time.time()
        try:
            count = namer.fit(examples)
        except ValueError as error:  # No labelled object to learn from: the teacher's labels.
            logging.warning("Offline pseudo labels: %s; the teacher's labels are kept as they "
                            "are", error)
            print(f"WARNING: offline pseudo labels not renamed: {error}", flush=True)
            return None, {"reference_objects": 0, "crop_features": f"none ({error})"}
        loaded = getattr(scorer, "loaded_from", None)
        how = f"loaded from {loaded}" if loaded else "learnt"
        print(f"Offline pseudo labels: objects renamed by {scorer.description}, {how} from "
              f"{count} labelled objects in {time.time() - start:.0f} s", flush=True)
        return namer, {"reference_objects": count, "crop_features": scorer.description}

    return factory


def _train_teacher_beside_namer(train_teacher, factory):
    """Runs the teacher stage and, in a thread beside it, the objects' namer's fitting.

    The stage trains in a subprocess whose single training process leaves part of the cores
    idle; the namer's fitting (the crop scorer's fine-tuning, about 18 s alone on 2 cores)
    needs only the labelled images and the classifier checkpoint, not the teacher.

    Args:
      train_teacher: a function without arguments returning the teacher's directory.
      factory: the namer's `relabel_factory` (`_crop_namer_factory`), or None (nothing to
        fit: the labels are made, or this process does not make them).

    Returns:
      `(teacher_directory, fitted)`: `fitted` is a factory that returns the namer fitted here
      (the crop scorer is in the cache too, where an earlier round's process finds it), or
      None when `factory` is None.
    """
    if factory is None:
        return train_teacher(), None
    print("Offline pseudo labels: fitting the objects' namer beside the teacher stage",
          flush=True)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="crop_namer") as pool:
        fitting = pool.submit(factory)
        try:
            teacher = train_teacher()
        finally:  # On the stage's failure too: the fitting finishes before the error goes on.
            concurrent.futures.wait([fitting])
    fitted = fitting.result()  # The fitting's own error, if it failed.
    return teacher, lambda: fitted


@gin.configurable("offline_pseudo_labels",
                  denylist=["output_dir", "teacher_checkpoint", "labelled_spec",
                            "unlabelled_spec", "num_classes", "init_checkpoint", "chief",
                            "logdir"])
def prepare_offline_labels(output_dir, teacher_checkpoint, labelled_spec, unlabelled_spec,
                           num_classes, init_checkpoint=None, chief=True, logdir=None, rounds=1,
                           round_steps=None, step_shares=None, continue_rounds=False,
                           start_from_teacher=False, rename_objects=True,
                           classifier_checkpoint=None, crop_size=None,
                           crop_scorer="fine_tuned", temperature=None, l2=10.0,
                           fine_tune_steps=300, fine_tune_learning_rate=3e-4, fine_tune_seed=0,
                           reuse_crop_scorer=True, margin=4.0, min_pixels=30, min_confidence=0.0,
                           flip=True, match_background=None, num_shards=4,
                           wait_secs=7200):
    """Makes the offline pseudo labels of a semi run once, or reuses them.

    Args:
      output_dir: the pseudo-label directory (`self_training.pseudo_label_dir(logdir)`).
      teacher_checkpoint: the teacher's log directory or checkpoint prefix, or a function
        without arguments that returns it (`train.teacher_checkpoint = @supervised_teacher`,
        the teacher stage, which trains the teacher unless it is cached): it is called first,
        and while it runs the objects' namer is fitted beside it (the crop scorer's
        fine-tuning uses the cores the teacher's training leaves idle; the same namer as when
        fitted after it).
      labelled_spec: the labelled images (the references of the object naming).
      unlabelled_spec: the images to label.
      num_classes: classes including background.
      init_checkpoint: the run's warm start (a TF1 checkpoint prefix), the default classifier.
      chief: whether this process writes (False: wait for the chief's labels).
      logdir: the run's log directory (needed with `rounds > 1`).
      rounds: 1: `teacher_checkpoint` labels the images; N > 1: round N - 1 of this run does,
        trained first into `LOGDIR/round_<N-1>` (`train_earlier_round`) unless the labels
        are already complete. One process only (a multi-worker run fails: train each round as
        a run of its own, `train.teacher_checkpoint` the round before).
      round_steps: None (every round trains `train.num_steps`) or one step count per round,
        the first round's first: each round's own poly schedule (read by the trainer through
        `round_plan`, which passes every round's count here).
      step_shares: None, or one positive share per round: `train.num_steps` split among the
        rounds in these proportions (`demo.gin`: (2, 1), 1000 and 500 of 1500 steps), so
        that `train.num_steps` stays the length of the whole run. Not with `round_steps`.
      continue_rounds: start each round after the first from the final weights of the round
        before (a fresh optimizer) instead of `train.init_checkpoint` (read by the task
        through `round_plan`).
      start_from_teacher: round 1 starts from every weight of the teacher's final checkpoint
        (`train.teacher_checkpoint`, a fresh optimizer) instead of `train.init_checkpoint`
        (read by the task through `round_plan`); later rounds as `continue_rounds` says.
      rename_objects: rename each object by its crop (False: the teacher's argmax as it is).
      classifier_checkpoint: the crop classifier's TF1 checkpoint (default: `init_checkpoint`).
      crop_size: the crops' (height, width): the classifier's training crop (`demo.gin`: 57,
        `pretrain_demo.gin`'s). Required with `rename_objects`.
      crop_scorer: how a crop's classes are scored (`wss.method.crop_classifier`):
        'fine_tuned' (the classifier fine-tuned on the labelled objects' crops) or 'ridge' (a
        ridge regression on the frozen classifier's logits, demo.gin's rule until the
        thirty-second session).
      temperature: softmax temperature of the crops' class scores (None: 1.0 for
        'fine_tuned', whose scores are logits, 0.1 for 'ridge', whose scores are near 0 / 1).
      l2: ridge penalty of the crops' regression ('ridge').
      fine_tune_steps: Adam steps of the fine-tuning ('fine_tuned'; batches of 32 crops).
      fine_tune_learning_rate: its constant rate.
      fine_tune_seed: seeds the crops it draws and their augmentation.
      reuse_crop_scorer: cache the fine-tuned scorer ('fine_tuned'; `wss.cache`,
        `crop_scorer_<hash>` of the reference crops, the settings and the checkpoint) and load
        it when the same crops come again: round 2 of `demo.gin`, and every seed of one
        labelled split, instead of fine-tuning again (about 18 s on 2 cores).
      margin: pixels around each object's bounding square.
      min_pixels: smaller objects keep the teacher's labels and are not references.
      min_confidence: an object whose name's posterior (the normalised product of the crop's
        and the teacher's foreground softmaxes) is below this gets the ignore label, so the
        student does not learn from it; 0 (the default) names every object.
      flip: average the teacher's softmax with that of the mirror image.
      match_background: None (the default: the teacher's labels as they are), or match them
        to the labelled masks' share of background pixels (`labelled_background_share`) with
        the background bias that gives the teacher's argmax that share on up to 256 of the
        unlabelled images (`self_training.write_pseudo_labels`' `background_share`):
        'bias' divides the teacher's background probability by it before the objects are
        found and named; 'ignore' keeps the teacher's labels and gives the ignore label to
        the pixels whose argmax the bias would change (`self_training.background_band`). A
        teacher fitted on a few images labels too much background (`random_colours`, seed 0:
        81.5% against the masks' 77.9%). Measured, seed 0 (benchmarks/RESULTS.md, fortieth
        session): 'bias' names more of the foreground right (60.1% against 55.3%) but moved
        the students by -0.65 (`random_colours`) and +0.65 (`held_out`) points; 'ignore' by
        +1.03 and +0.72 (`random_colours`, seeds 0 and 1) and +1.82 (`held_out`), its
        round-1 students lower on `random_colours`. Over 3 paired seeds (forty-first session)
        'ignore' raised 8 of 9 final students (`random_colours` +0.93, `held_out` +1.67,
        `shapes` -0.78 on the means), and `demo.gin` binds it; on `large` (forty-second
        session) it moved them by -0.49 (1 of 3 seeds higher).
      num_shards: record files.
      wait_secs: how long a non-chief worker waits for the chief's labels.

    Returns:
      The marker dict (`self_training.prepare_pseudo_labels`).

    Raises:
      ValueError: naming the binding at fault (a setting out of range, no classifier
        checkpoint or crop size to rename with, labels in `output_dir` made with other
        settings).
    """
    config_lib.check_bool("offline_pseudo_labels.rename_objects", rename_objects)
    config_lib.check_bool("offline_pseudo_labels.flip", flip)
    if match_background is not None:
        config_lib.check_choice("offline_pseudo_labels.match_background", match_background,
                                ("bias", "ignore"))
    config_lib.check_int("offline_pseudo_labels.rounds", rounds, minimum=1)
    if round_steps is not None:
        _check_per_round("offline_pseudo_labels.round_steps", round_steps, rounds,
                         lambda binding, value: config_lib.check_int(binding, value, minimum=1))
    config_lib.check_bool("offline_pseudo_labels.continue_rounds", continue_rounds)
    config_lib.check_bool("offline_pseudo_labels.start_from_teacher", start_from_teacher)
    if rounds > 1:
        if logdir is None:
            raise ValueError(f"offline_pseudo_labels.rounds={rounds}: the earlier rounds are "
                             "trained inside the run's log directory; none was given")
        if not chief:
            raise ValueError(
                f"offline_pseudo_labels.rounds={rounds} trains the earlier rounds in one "
                "process and cannot on a multi-worker cluster: bind rounds = 1 and train each "
                "round as a run of its own, train.teacher_checkpoint the round before's log "
                "directory")
    settings = {"offline_rename_objects": rename_objects}
    factory = None
    if rename_objects:
        classifier_checkpoint = classifier_checkpoint or init_checkpoint
        if not classifier_checkpoint:
            raise ValueError("offline_pseudo_labels.rename_objects = True names objects with a "
                             "pretrained classifier: bind train.init_checkpoint (or "
                             "offline_pseudo_labels.classifier_checkpoint), or bind "
                             "offline_pseudo_labels.rename_objects = False")
        if crop_size is None:
            raise ValueError("offline_pseudo_labels.crop_size: bind the crop the classifier "
                             "was trained on (pretrain_demo.gin: (57, 57))")
        config_lib.check_choice("offline_pseudo_labels.crop_scorer", crop_scorer,
                                ("fine_tuned", "ridge"))
        if temperature is None:
            temperature = 1.0 if crop_scorer == "fine_tuned" else 0.1
        object_naming.check_settings(crop_size, temperature, l2, margin, min_pixels,
                                     min_confidence)
        scorer_settings = {"offline_l2": float(l2)}
        if crop_scorer == "fine_tuned":
            config_lib.check_int("offline_pseudo_labels.fine_tune_steps", fine_tune_steps,
                                 minimum=1)
            config_lib.check_number("offline_pseudo_labels.fine_tune_learning_rate",
                                    fine_tune_learning_rate, minimum=0.0,
                                    exclusive_minimum=True)
            config_lib.check_int("offline_pseudo_labels.fine_tune_seed", fine_tune_seed)
            config_lib.check_bool("offline_pseudo_labels.reuse_crop_scorer", reuse_crop_scorer)
            scorer_settings = {"offline_fine_tune_steps": int(fine_tune_steps),
                               "offline_fine_tune_learning_rate": float(fine_tune_learning_rate),
                               "offline_fine_tune_seed": int(fine_tune_seed)}
        settings.update(scorer_settings)
        settings.update({
            "offline_crop_scorer": crop_scorer,
            "offline_classifier": os.path.abspath(classifier_checkpoint)
            if "://" not in classifier_checkpoint else classifier_checkpoint,
            "offline_crop_size": [int(side) for side in crop_size],
            "offline_temperature": float(temperature),
            "offline_margin": float(margin), "offline_min_pixels": int(min_pixels)})
        if min_confidence:  # Only when set, so labels made before the setting still match.
            settings["offline_min_confidence"] = float(min_confidence)

        def make_scorer():
            return _make_scorer(crop_scorer, classifier_checkpoint, num_classes, l2,
                                fine_tune_steps, fine_tune_learning_rate, fine_tune_seed,
                                reuse_crop_scorer)

        factory = _crop_namer_factory(labelled_spec, num_classes, make_scorer, crop_size,
                                      temperature, margin, min_pixels, min_confidence)
    labels_made = self_training.read_marker(output_dir) is not None
    background_share = None
    if match_background:  # Only when set, so labels made before the setting still match.
        settings["offline_match_background"] = match_background
        if chief and not labels_made:
            background_share = labelled_background_share(labelled_spec, num_classes)
    if callable(teacher_checkpoint):
        teacher_checkpoint, fitted = _train_teacher_beside_namer(
            teacher_checkpoint, factory if chief and not labels_made else None)
        factory = fitted or factory
    if rounds > 1:
        teacher_checkpoint = round_dir(logdir, rounds - 1)
        if not labels_made:
            train_earlier_round(logdir, rounds, round_steps)
    return self_training.prepare_pseudo_labels(
        output_dir, teacher_checkpoint, unlabelled_spec, num_classes, chief=chief,
        threshold=0.0, scales=(1.0,), flip=flip, num_shards=num_shards, wait_secs=wait_secs,
        relabel_factory=factory, extra_settings=settings, background_share=background_share,
        background_mode=match_background or "bias")
