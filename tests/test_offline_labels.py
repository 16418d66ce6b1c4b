"""Offline pseudo labels with objects renamed by crops (`train.offline_pseudo_labels`).

The region search is checked against scipy's connected-component labelling, the boxes, ridge
regression and renaming rule against hand or numpy (float64) computations, `CropNamer` on a
scene whose right names a colour describer knows, the objective's offline targets against a
one-hot reference, and one tiny end-to-end semi run labels the unlabelled images with a tiny
teacher and a tiny classifier checkpoint, trains L_u on them and reuses them.
"""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from tiny_runs import configure_demo, generate_tiny_set

from wss.data import records, splits
from wss.data.records import IGNORE_LABEL
from wss.method import crop_classifier, object_naming, offline_labels, self_training, teacher_stage
from wss.method.objective import PseudoSegObjective
from wss.models import build_image_classifier, save_tf1_checkpoint
from wss.training import trainer

NUM_CLASSES = 11


def test_connected_components_partition_as_scipy_does():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    eight = np.ones((3, 3), bool)
    for _ in range(100):
        label_map = rng.integers(0, 3, size=(int(rng.integers(1, 15)), int(rng.integers(1, 15))))
        components = object_naming.connected_components(label_map)
        for value in np.unique(label_map):
            expected, count = ndimage.label(label_map == value, structure=eight)
            ours = components[label_map == value]
            theirs = expected[label_map == value]
            # The same partition: each of our components is exactly one of scipy's.
            pairs = set(zip(ours.tolist(), theirs.tolist()))
            assert len(pairs) == len(set(ours.tolist())) == count


def test_connected_regions_split_each_class_and_drop_small_ones():
    label_map = np.zeros((8, 8), np.int64)
    label_map[0:2, 0:2] = 1  # 4 pixels of class 1.
    label_map[5:8, 5:8] = 1  # 9 pixels of class 1, not touching the first.
    label_map[2, 2] = 1  # Touches the first region diagonally (8-connectivity): 5 pixels.
    label_map[0:3, 5:8] = 2  # 9 pixels of class 2.
    label_map[7, 0] = IGNORE_LABEL
    regions, classes = object_naming.connected_regions(label_map, 3, min_pixels=5)
    assert classes == [1, 1, 2]
    assert [int(region.sum()) for region in regions] == [5, 9, 9]
    assert regions[0][2, 2] and regions[0][0, 0]
    regions, classes = object_naming.connected_regions(label_map, 3, min_pixels=6)
    assert classes == [1, 2]


def test_square_boxes_centre_the_bounding_square_with_a_margin():
    region = np.zeros((10, 10), bool)
    region[2:6, 3:5] = True  # Rows 2-5, columns 3-4: centre (3.5, 3.5), half side 1.5.
    boxes = object_naming.square_boxes([region], margin=1.0)
    np.testing.assert_allclose(boxes[0], np.array([1.0, 1.0, 6.0, 6.0]) / 9.0, rtol=1e-6)
    # A box over the whole image crops the image itself.
    image = np.arange(10 * 10 * 3, dtype=np.float32).reshape(10, 10, 3)
    crops = object_naming.crop_regions(image, [[0.0, 0.0, 1.0, 1.0]], (10, 10))
    np.testing.assert_allclose(crops.numpy()[0], image, atol=1e-3)
    # The square of `boxes[0]` is 6 pixels on a side (rows 1-6, columns 1-6).
    crops = object_naming.crop_regions(image, boxes, (6, 6))
    np.testing.assert_allclose(crops.numpy()[0], image[1:7, 1:7], atol=1e-3)


def test_fit_ridge_solves_the_penalised_least_squares_problem():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 5)) * [1, 2, 3, 4, 5] + 7
    classes = rng.integers(0, 4, size=40)
    l2 = 3.0
    mean, std, weights = object_naming.fit_ridge(features, classes, 4, l2)
    design = np.concatenate([(features - features.mean(0)) / features.std(0),
                             np.ones((40, 1))], 1)
    # Ridge as ordinary least squares on the design stacked over sqrt(l2) * identity.
    stacked = np.concatenate([design, np.sqrt(l2) * np.eye(6)])
    targets = np.concatenate([np.eye(4)[classes], np.zeros((6, 4))])
    expected = np.linalg.lstsq(stacked, targets, rcond=None)[0]
    np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(object_naming.ridge_scores(features, (mean, std, weights)),
                               design @ expected, rtol=1e-6, atol=1e-8)


def test_rename_regions_takes_the_product_of_crop_and_teacher():
    probabilities = np.zeros((2, 4, 3))
    probabilities[:, :2] = [0.1, 0.6, 0.3]  # Left region: the teacher says class 1.
    probabilities[:, 2:] = [0.8, 0.1, 0.1]  # Background.
    region = np.zeros((2, 4), bool)
    region[:, :2] = True
    # Crop scores favour class 2 by 0.2 at temperature 0.1: softmax (e^-1, e^1) / sum.
    labels = object_naming.rename_regions(probabilities, [region], [[9.0, 0.3, 0.5]], 0.1)
    crop = np.exp([3.0, 5.0]) / np.exp([3.0, 5.0]).sum()
    expected = 1 + int(np.argmax(np.array([0.6, 0.3]) * crop))
    assert expected == 2
    np.testing.assert_array_equal(labels, [[2, 2, 0, 0], [2, 2, 0, 0]])
    # A crop that barely prefers class 2 leaves the teacher's choice.
    labels = object_naming.rename_regions(probabilities, [region], [[0.0, 0.3, 0.31]], 0.1)
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0], [1, 1, 0, 0]])


def test_rename_regions_leaves_unsure_regions_unnamed():
    probabilities = np.zeros((2, 4, 3))
    probabilities[:, :2] = [0.1, 0.6, 0.3]
    probabilities[:, 2:] = [0.8, 0.1, 0.1]
    region = np.zeros((2, 4), bool)
    region[:, :2] = True
    scores = [[9.0, 0.3, 0.5]]
    crop = np.exp([3.0, 5.0]) / np.exp([3.0, 5.0]).sum()
    product = np.array([0.6, 0.3]) * crop
    posterior = product.max() / product.sum()  # Of class 2, about 0.787.
    named = object_naming.rename_regions(probabilities, [region], scores, 0.1,
                                         min_confidence=posterior - 1e-6)
    np.testing.assert_array_equal(named, [[2, 2, 0, 0], [2, 2, 0, 0]])
    unnamed = object_naming.rename_regions(probabilities, [region], scores, 0.1,
                                           min_confidence=posterior + 1e-6)
    ignore = object_naming.IGNORE_LABEL
    np.testing.assert_array_equal(unnamed, [[ignore, ignore, 0, 0], [ignore, ignore, 0, 0]])


COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


def _scene(classes):
    """A 24 x 24 grey image with a 6 x 6 square of each class's colour, and its mask."""
    image = np.full((24, 24, 3), 128.0, np.float32)
    mask = np.zeros((24, 24), np.uint8)
    for index, class_id in enumerate(classes):
        top = 2 + 12 * (index // 2)
        left = 2 + 12 * (index % 2)
        image[top:top + 6, left:left + 6] = COLOURS[class_id]
        mask[top:top + 6, left:left + 6] = class_id
    return image, mask


def test_crop_namer_renames_an_object_the_teacher_names_wrong():
    # The describer: each crop's mean colour (the crop's centre is the object).
    scorer = crop_classifier.RidgeScorer(
        lambda crops: tf.reduce_mean(crops[:, 3:7, 3:7], axis=[1, 2]).numpy(), 4, l2=0.1)
    namer = object_naming.CropNamer(scorer, 4, crop_size=(10, 10), temperature=0.1, margin=2.0,
                                    min_pixels=4)
    references = [_scene([1, 2, 3]), _scene([3, 2, 1])]
    assert namer.fit(references) == 6
    image, mask = _scene([2, 3, 1])
    # The teacher finds every object but calls all three class 1, hesitating.
    probabilities = np.full((24, 24, 4), 0.0)
    probabilities[..., 0] = 1.0
    foreground = mask > 0
    probabilities[foreground] = [0.0, 0.4, 0.3, 0.3]
    labels = namer(image, probabilities)
    np.testing.assert_array_equal(labels, mask)
    with pytest.raises(ValueError, match="offline_pseudo_labels.min_pixels"):
        object_naming.CropNamer(scorer, 4, (10, 10), min_pixels=100).fit(references)


def test_offline_targets_are_one_hot_labels_at_the_logits_resolution():
    model = None  # The offline path runs no pass.
    labels = np.random.default_rng(2).integers(0, 4, size=(2, 33, 33)).astype(np.int32)
    labels[0, :8] = IGNORE_LABEL
    logits = tf.zeros([2, 9, 9, 4])
    from wss.method import objective as objective_lib

    targets, weights = objective_lib._one_hot_targets(tf.constant(labels), logits)
    small = labels[:, ::4, ::4]  # Aligned corners: position i reads pixel 4 i.
    known = small != IGNORE_LABEL
    np.testing.assert_array_equal(weights.numpy(), known.astype(np.float32))
    np.testing.assert_array_equal(targets.numpy()[known], np.eye(4)[small[known]])
    np.testing.assert_array_equal(targets.numpy()[~known],
                                  np.eye(4)[np.zeros(int((~known).sum()), int)])
    objective = PseudoSegObjective(model, sgc_head=object(), mode="semi", offline_labels=True)
    batch = {"label": tf.constant(labels)}
    assert objective.pseudo_label_pass(batch)["labels"] is batch["label"]
    with pytest.raises(ValueError, match="train.mode 'semi'"):
        PseudoSegObjective(model, sgc_head=object(), mode="weak", offline_labels=True)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_tiny_set(tmp_path_factory, seed=5)


def offline_run_bindings(tiny_data, tmp_path, num_shards):
    """Trains a 1-step supervised teacher and saves a tiny "pretrained" classifier of 5
    categories (random weights are enough here); returns the bindings of a run they label."""
    teacher_dir = str(tmp_path / "teacher")
    configure_demo("demo_supervised.gin", tiny_data, steps=1)
    trainer.train(teacher_dir)
    gin.clear_config()
    classifier = build_image_classifier(num_logits=5, width_multiplier=0.0625,
                                        middle_flow_units=1)
    checkpoint = save_tf1_checkpoint(classifier, str(tmp_path / "tf1" / "model.ckpt"))
    return [f"train.teacher_checkpoint = '{teacher_dir}'",
            "train.ema_teacher_decay = 0.0",
            "train.offline_pseudo_labels = True",
            f"offline_pseudo_labels.classifier_checkpoint = '{checkpoint}'",
            "offline_pseudo_labels.crop_size = (17, 17)",
            "offline_pseudo_labels.min_pixels = 10",
            "offline_pseudo_labels.fine_tune_steps = 3",
            f"offline_pseudo_labels.num_shards = {num_shards}"]


@gin.configurable("ready_teacher_stage")
def ready_teacher_stage(labelled_pattern, labelled_split, directory=None):
    """A stand-in for `@supervised_teacher` that returns a teacher trained beforehand."""
    del labelled_pattern, labelled_split
    return directory


@pytest.mark.slow
def test_offline_run_labels_trains_and_reuses(tiny_data, tmp_path, capsys):
    extra = offline_run_bindings(tiny_data, tmp_path, num_shards=2)
    # The teacher given as a stage (a function), as demo.gin's @supervised_teacher.
    extra += ["train.teacher_checkpoint = @ready_teacher_stage",
              f"ready_teacher_stage.directory = '{tmp_path / 'teacher'}'"]
    student_dir = str(tmp_path / "student")
    configure_demo("demo.gin", tiny_data, steps=2, extra=extra)
    result = trainer.train(student_dir)
    assert result["step"] == 2 and result["finished"]
    for key in ("loss_s", "loss_u", "loss_x", "loss_sa", "loss_total"):
        assert np.isfinite(result[key]), (key, result[key])
    summary = result["offline_pseudo_labels"]
    # demo.gin's match_background = 'ignore' leaves the background band unlabelled.
    assert summary["num_images"] == 60 and 0.0 < summary["kept_fraction"] <= 1.0
    assert summary["settings"]["offline_match_background"] == "ignore"
    assert summary["background_mode"] == "ignore" and np.isfinite(summary["background_bias"])
    assert summary["reference_objects"] > 0
    assert "fine-tuned on the labelled objects' crops (3 steps" in summary["crop_features"]
    assert summary["settings"]["offline_crop_size"] == [17, 17]
    assert summary["settings"]["offline_crop_scorer"] == "fine_tuned"
    assert summary["settings"]["offline_temperature"] == 1.0
    for key in ("accuracy", "teacher_accuracy", "foreground_accuracy",
                "teacher_foreground_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert "pseudo_labels" not in result  # No online diagnostics against the offline labels.
    assert summary["settings"]["teacher_checkpoint"] == str(tmp_path / "teacher")
    out = capsys.readouterr().out
    assert "objects renamed by the classifier of" in out
    assert "fitting the objects' namer beside the teacher stage" in out

    directory = self_training.pseudo_label_dir(student_dir)
    written = records.read_examples(os.path.join(directory, "train-*.tfrecord"), NUM_CLASSES)
    assert len(written) == 60
    assert all(ex["has_mask"] and not ex["has_class_labels"] for ex in written)
    with open(os.path.join(student_dir, "train_result.json")) as f:
        assert json.load(f)["offline_pseudo_labels"]["num_images"] == 60

    # Resumed with the same settings: the labels are reused; with other settings: named.
    gin.clear_config()
    configure_demo("demo.gin", tiny_data, steps=2, extra=extra)
    trainer.train(student_dir)
    assert "Reusing the pseudo labels" in capsys.readouterr().out
    # Other settings, out-of-range values and settings recorded only when set (labels made
    # before such a setting existed still match) are named.
    assert "offline_min_confidence" not in summary["settings"]
    for binding, match in [
            ("offline_pseudo_labels.temperature = 0.5", "offline_temperature"),
            ("offline_pseudo_labels.min_confidence = 1.5",
             "offline_pseudo_labels.min_confidence=1.5"),
            ("offline_pseudo_labels.min_confidence = 0.9", "offline_min_confidence"),
            ("offline_pseudo_labels.match_background = None",
             "offline_match_background 'ignore' \\(this run: unset\\)"),
            ("offline_pseudo_labels.match_background = True",
             "offline_pseudo_labels.match_background")]:
        gin.clear_config()
        configure_demo("demo.gin", tiny_data, steps=3, extra=extra + [binding])
        with pytest.raises(ValueError, match=match):
            trainer.train(student_dir)


def test_the_labelled_background_share_counts_the_masks_known_pixels(tiny_data):
    from wss.data import pipeline

    spec = pipeline.DatasetSpec(os.path.join(tiny_data, "train-*.tfrecord"),
                                os.path.join(tiny_data, "labelled_1_16.txt"))
    ids = set(splits.read_split_file(os.path.join(tiny_data, "labelled_1_16.txt")))
    masks = [ex["label"] for ex in records.read_examples(
        os.path.join(tiny_data, "train-*.tfrecord"), NUM_CLASSES) if ex["id"] in ids]
    known = np.concatenate([mask[mask != IGNORE_LABEL] for mask in masks])
    share = offline_labels.labelled_background_share(spec, NUM_CLASSES)
    assert share == pytest.approx(np.mean(known == 0), abs=1e-12)
    assert 0.0 < share < 1.0


@pytest.mark.parametrize("extra, match", [
    (["train.ema_teacher_decay = 1.0"], "bind train.ema_teacher_decay = 0.0"),
    (["train.ema_teacher_decay = 0.0", "train.teacher_checkpoint = None"],
     "needs train.teacher_checkpoint"),
    (["train.ema_teacher_decay = 0.0", "train.mode = 'weak'"], "for train.mode 'semi', not 'weak'"),
])
def test_offline_labels_bindings_are_checked(tiny_data, tmp_path, extra, match):
    configure_demo("demo.gin", tiny_data, steps=1,
                   extra=["train.offline_pseudo_labels = True", *extra])
    with pytest.raises(ValueError, match=match):
        trainer.train(str(tmp_path))


def test_the_namer_needs_a_crop_size_and_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="offline_pseudo_labels.crop_size"):
        offline_labels.prepare_offline_labels(str(tmp_path), "teacher", None, None, 3,
                                              init_checkpoint="ckpt")
    with pytest.raises(ValueError, match="train.init_checkpoint"):
        offline_labels.prepare_offline_labels(str(tmp_path), "teacher", None, None, 3)


def test_the_namer_is_fit_on_the_labelled_objects_or_warns(tiny_data, monkeypatch, capsys):
    from wss.data import pipeline

    def make_scorer():
        return crop_classifier.RidgeScorer(lambda crops: np.asarray(crops).mean((1, 2)),
                                           NUM_CLASSES, description="mean")

    spec = pipeline.DatasetSpec(os.path.join(tiny_data, "train-*.tfrecord"),
                                os.path.join(tiny_data, "labelled_1_16.txt"))
    labelled = set(splits.read_split_file(os.path.join(tiny_data, "labelled_1_16.txt")))
    expected = sum(
        len(object_naming.connected_regions(example["label"], NUM_CLASSES, 10)[1])
        for example in records.read_examples(os.path.join(tiny_data, "train-*.tfrecord"),
                                             NUM_CLASSES) if example["id"] in labelled)
    assert expected > 0
    factory = offline_labels._crop_namer_factory(spec, NUM_CLASSES, make_scorer, (9, 9), 0.1,
                                                 4.0, 10)
    namer, report = factory()
    assert namer.num_references == report["reference_objects"] == expected
    assert report["crop_features"] == "a ridge regression (penalty 10) on the mean"
    # No labelled object is large enough: a warning, and the teacher's labels stay.
    namer, report = offline_labels._crop_namer_factory(spec, NUM_CLASSES, make_scorer, (9, 9),
                                                       0.1, 4.0, 40 * 40 + 1)()
    assert namer is None and report["reference_objects"] == 0
    assert "offline_pseudo_labels.min_pixels" in report["crop_features"]
    assert "WARNING: offline pseudo labels not renamed" in capsys.readouterr().out


def test_offline_bindings_do_not_change_the_teacher():
    base = "train.mode = 'semi'\ntrain.seed = 0\n"
    offline = base + ("train.offline_pseudo_labels = True\n"
                      "offline_pseudo_labels.crop_size = (57, 57)\n"
                      "PseudoSegObjective.offline_label_resolution = 'image'\n")
    assert (teacher_stage.teacher_cache_name(base, ["x"])
            == teacher_stage.teacher_cache_name(offline, ["x"]))


@pytest.mark.slow
def test_the_command_line_knows_the_offline_bindings():
    # A fresh process imports only what `python -m wss.train` imports before parsing: the
    # configurables of the offline labels must be registered by then (this once failed).
    import subprocess
    import sys

    code = ("import wss.train\n"
            "from wss import experiment\n"
            "experiment.parse_experiment_config(gin_files=['demo.gin'], gin_bindings=[\n"
            "    'offline_pseudo_labels.crop_size = (57, 57)', 'crop_classifier.output_stride = 32'"
            "])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_offline_labels_are_mixed_with_the_strong_views_by_cutmix():
    objective = PseudoSegObjective(None, sgc_head=object(), mode="semi", offline_labels=True)
    rng = np.random.default_rng(3)
    labels = tf.constant(rng.integers(0, 5, (3, 9, 9)), tf.int32)
    keep = (rng.random((3, 9, 9)) < 0.5).astype(np.float32)
    strong = rng.random((3, 9, 9, 3)).astype(np.float32)
    batch = {"strong": tf.constant(strong), "strong_valid": tf.ones([3, 9, 9]),
             "mix_mask": tf.constant(keep)}
    images, valid, mixed, weights = objective._strong_batch(batch, {"labels": labels})
    # Image i keeps its own pixels where the mask is 1 and takes image i + 1's elsewhere.
    expected = np.where(keep > 0, labels.numpy(), np.roll(labels.numpy(), -1, axis=0))
    np.testing.assert_array_equal(mixed.numpy(), expected)
    assert mixed.dtype == tf.int32 and weights is None
    np.testing.assert_allclose(images.numpy(), np.where(keep[..., None] > 0, strong,
                                                        np.roll(strong, -1, axis=0)))
    np.testing.assert_array_equal(valid.numpy(), np.ones((3, 9, 9)))


@pytest.mark.slow
def test_a_second_round_is_labelled_by_the_first_rounds_student(tiny_data, tmp_path, capsys):
    """Two rounds as demo.gin trains them: each its own steps, the second continuing the first."""
    extra = offline_run_bindings(tiny_data, tmp_path, num_shards=1) + [
        "offline_pseudo_labels.rounds = 2", "offline_pseudo_labels.step_shares = (2, 1)",
        "offline_pseudo_labels.continue_rounds = True"]
    teacher_dir = str(tmp_path / "teacher")
    student_dir = str(tmp_path / "student")
    configure_demo("demo.gin", tiny_data, steps=3, extra=extra)
    result = trainer.train(student_dir)
    assert result["finished"] and result["step"] == 1  # Its share of train.num_steps.
    round_1 = offline_labels.round_dir(student_dir, 1)
    assert result["offline_pseudo_labels"]["settings"]["teacher_checkpoint"] == round_1
    with open(os.path.join(round_1, "train_result.json")) as f:
        first = json.load(f)
    # Round 1 is the same config with one round: its own labels come from the teacher.
    assert first["finished"] and first["step"] == 2
    assert first["offline_pseudo_labels"]["settings"]["teacher_checkpoint"] == teacher_dir
    assert not os.path.exists(offline_labels.round_dir(round_1, 1))
    out = capsys.readouterr().out
    assert "training round 1" in out and "round 2 of 2, 1 steps" in out
    # Round 2 starts from round 1's final weights, not from the warm start.
    assert f"Started from every weight of {os.path.join(round_1, 'ckpt-2')}" in out
    assert "Warm start from" not in out  # (Round 1's own output is its subprocess's.)

    # Resumed: the labels are complete, so round 1 is neither trained nor read again, and the
    # run restores its own checkpoint, not round 1's.
    gin.clear_config()
    configure_demo("demo.gin", tiny_data, steps=3, extra=extra)
    trainer.train(student_dir)
    out = capsys.readouterr().out
    assert "Reusing the pseudo labels" in out and "training round 1" not in out
    assert "Resumed from" in out and "Started from every weight" not in out


@pytest.mark.slow
def test_the_first_round_can_start_from_the_teacher(tiny_data, tmp_path, capsys):
    extra = offline_run_bindings(tiny_data, tmp_path, num_shards=1) + [
        "offline_pseudo_labels.start_from_teacher = True"]
    teacher_dir = str(tmp_path / "teacher")
    configure_demo("demo.gin", tiny_data, steps=1, extra=extra)
    result = trainer.train(str(tmp_path / "student"))
    assert result["finished"]
    out = capsys.readouterr().out
    assert "1 steps from the teacher's final weights" in out
    assert f"Started from every weight of {os.path.join(teacher_dir, 'ckpt-1')}" in out
    assert "Warm start from" not in out


def test_a_finished_round_is_reused_and_rounds_are_checked(tmp_path, monkeypatch):
    round_1 = offline_labels.round_dir(str(tmp_path), 1)
    os.makedirs(round_1)
    with open(os.path.join(round_1, "train_result.json"), "w") as f:
        json.dump({"finished": True, "step": 3}, f)

    def never(*args, **kwargs):
        raise AssertionError("a finished round was trained again")

    monkeypatch.setattr(offline_labels.subprocess, "run", never)
    assert offline_labels.train_earlier_round(str(tmp_path), 2) == round_1
    # A round that stopped early (preempted) fails, saying how to resume.
    with open(os.path.join(round_1, "train_result.json"), "w") as f:
        json.dump({"finished": False, "step": 1}, f)
    monkeypatch.setattr(offline_labels.subprocess, "run",
                        lambda *args, **kwargs: subprocess_result(0))
    with pytest.raises(RuntimeError, match="run this command again to resume"):
        offline_labels.train_earlier_round(str(tmp_path), 2)
    monkeypatch.setattr(offline_labels.subprocess, "run",
                        lambda *args, **kwargs: subprocess_result(1))
    with pytest.raises(RuntimeError, match="round 1 of the offline pseudo labels failed"):
        offline_labels.train_earlier_round(str(tmp_path), 2)

    for rounds, chief, logdir, match in ((0, True, "x", "offline_pseudo_labels.rounds"),
                                         (2, True, None, "log directory"),
                                         (2, False, "x", "multi-worker")):
        with pytest.raises(ValueError, match=match):
            offline_labels.prepare_offline_labels(
                str(tmp_path / "labels"), "teacher", None, None, 3, init_checkpoint="ckpt",
                chief=chief, logdir=logdir, rounds=rounds, crop_size=(9, 9))


def test_the_namer_is_fitted_while_the_teacher_stage_trains():
    import threading

    teacher_started, namer_fitted = threading.Event(), threading.Event()
    calls = []

    def factory():  # Finishes only once the teacher stage is running: they overlap.
        calls.append("fit")
        assert teacher_started.wait(timeout=30), "the namer was not fitted beside the stage"
        namer_fitted.set()
        return "namer", {"reference_objects": 2}

    def train_teacher():
        teacher_started.set()
        assert namer_fitted.wait(timeout=30), "the stage did not run beside the fitting"
        return "teacher_dir"

    teacher, fitted = offline_labels._train_teacher_beside_namer(train_teacher, factory)
    assert teacher == "teacher_dir"
    assert fitted() == ("namer", {"reference_objects": 2}) and calls == ["fit"]
    # Nothing to fit (labels made, or not the chief): the stage alone.
    assert offline_labels._train_teacher_beside_namer(lambda: "t", None) == ("t", None)

    def failing_teacher():
        raise RuntimeError("the teacher stage failed")

    def slow_factory():
        namer_fitted.clear()
        threading.Event().wait(0.2)
        namer_fitted.set()
        return "namer", {}

    # The stage's error goes on, after the fitting has finished (no thread left running).
    with pytest.raises(RuntimeError, match="the teacher stage failed"):
        offline_labels._train_teacher_beside_namer(failing_teacher, slow_factory)
    assert namer_fitted.is_set()

    def failing_factory():
        raise ValueError("no labelled object")

    with pytest.raises(ValueError, match="no labelled object"):
        offline_labels._train_teacher_beside_namer(lambda: "t", failing_factory)


def test_round_plan_reads_the_round_bindings(tmp_path):
    logdir = str(tmp_path)
    assert offline_labels.round_plan(1500, logdir) == (1, 1500, None, None, False)
    gin.parse_config(["offline_pseudo_labels.rounds = 2",
                      "offline_pseudo_labels.step_shares = (2, 1)"])
    # train.num_steps split 2 : 1; without continue_rounds a round starts from the warm start.
    assert offline_labels.round_plan(1500, logdir) == (2, 500, None, (1000, 500), False)
    gin.parse_config(["offline_pseudo_labels.continue_rounds = True",
                      "offline_pseudo_labels.start_from_teacher = True"])
    # Round 2 continues round 1; only round 1 starts from the teacher.
    assert offline_labels.round_plan(1500, logdir) == (
        2, 500, offline_labels.round_dir(logdir, 1), (1000, 500), False)
    assert offline_labels.round_plan(5, logdir).round_steps == (3, 2)  # Rounded, adding up.
    gin.parse_config(["offline_pseudo_labels.rounds = 1"])
    with pytest.raises(ValueError, match=r"step_shares=\(2, 1\) gives 2 entries .*rounds = 1"):
        offline_labels.round_plan(1500, logdir)
    gin.parse_config(["offline_pseudo_labels.step_shares = None",
                      "offline_pseudo_labels.round_steps = (700,)"])
    # Round 1 never continues an earlier round; it starts from the teacher when bound.
    assert offline_labels.round_plan(1500, logdir) == (1, 700, None, (700,), True)
    for bindings, match in (
            (["round_steps = (0,)"], "offline_pseudo_labels.round_steps=0"),
            (["round_steps = 1000"], "one entry per round"),
            (["step_shares = (1, 0)", "rounds = 2"], "offline_pseudo_labels.step_shares=0"),
            (["step_shares = (1, 1)", "round_steps = (1, 1)", "rounds = 2"], "bind one of"),
            (["step_shares = (100, 1)", "rounds = 2"], "a round without a step"),
            (["continue_rounds = 'yes'"], "offline_pseudo_labels.continue_rounds"),
            (["start_from_teacher = 1"], "offline_pseudo_labels.start_from_teacher")):
        gin.clear_config()
        gin.parse_config([f"offline_pseudo_labels.{binding}" for binding in bindings])
        with pytest.raises(ValueError, match=match):
            offline_labels.round_plan(10, logdir)
    gin.clear_config()


def test_an_earlier_round_gets_its_own_steps(tmp_path, monkeypatch):
    commands = []

    def run(command, check):
        commands.append(command)
        round_1 = offline_labels.round_dir(str(tmp_path), 1)
        with open(os.path.join(round_1, "train_result.json"), "w") as f:
            json.dump({"finished": True, "step": 1000}, f)
        return subprocess_result(0)

    monkeypatch.setattr(offline_labels.subprocess, "run", run)
    offline_labels.train_earlier_round(str(tmp_path), 2, round_steps=(1000, 500))
    assert "--gin_bindings=offline_pseudo_labels.rounds = 1" in commands[0]
    assert "--gin_bindings=offline_pseudo_labels.round_steps = (1000,)" in commands[0]
    assert "--gin_bindings=offline_pseudo_labels.step_shares = None" in commands[0]


def subprocess_result(returncode):
    import subprocess

    return subprocess.CompletedProcess(args=[], returncode=returncode)
