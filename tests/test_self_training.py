"""Self-training (`train.mode = 'self_training'`): offline pseudo labels, loss, a tiny run.

The pseudo-label writer is checked against a numpy reference on a teacher whose outputs are
known (per-pixel linear logits of the colours), the records it writes are read back with the
project's reader, the marker logic (reuse, redo after an interrupted write, other settings)
is exercised without a real model, the loss against a hand computation, and one tiny
end-to-end run trains a student from a tiny supervised teacher and reuses its labels.
"""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from tiny_runs import configure_demo, generate_tiny_set

from wss.data import pipeline, records, splits
from wss.data.records import IGNORE_LABEL
from wss.method import losses, self_training
from wss.method.objective import PseudoSegObjective
from wss.training import trainer

NUM_CLASSES = 11


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_tiny_set(tmp_path_factory, seed=5)


def unlabelled_spec(data_dir):
    return pipeline.DatasetSpec(os.path.join(data_dir, "train-*.tfrecord"),
                                os.path.join(data_dir, "unlabelled_1_16.txt"))


class LinearTeacher(tf.Module):
    """Per-pixel linear logits of an image's colours: a model whose outputs numpy can compute.

    Returns full-resolution logits, so `predict_probabilities`' resize is the identity.
    """

    def __init__(self, num_classes=NUM_CLASSES, scale=8.0, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.kernel_np = (rng.normal(size=(3, num_classes)) * scale).astype(np.float32)
        self.bias_np = rng.normal(size=(num_classes,)).astype(np.float32)
        self.kernel = tf.constant(self.kernel_np)
        self.bias = tf.constant(self.bias_np)
        self.cls_kernel = tf.Variable(rng.normal(size=(3, num_classes - 1)), dtype=tf.float32)

    def __call__(self, images, training=False):
        del training
        colours = tf.cast(images, tf.float32) / 255.0
        logits = tf.einsum("bhwc,ck->bhwk", colours, self.kernel) + self.bias
        return {"logits": logits,
                "cls_logits": tf.matmul(tf.reduce_mean(colours, [1, 2]), self.cls_kernel)}

    def probabilities_np(self, image):
        logits = image.astype(np.float64) / 255.0 @ self.kernel_np + self.bias_np
        logits -= logits.max(-1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(-1, keepdims=True)


def test_hard_pseudo_labels_keep_the_argmax_above_the_threshold():
    probabilities = np.array([[[[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.2, 0.3, 0.5]],
                               [[0.1, 0.1, 0.8], [0.45, 0.45, 0.1], [0.34, 0.33, 0.33]]]],
                             np.float32)
    labels, keep = self_training.hard_pseudo_labels(probabilities, 0.5)
    # 0.5 is not above 0.5: the threshold is strict.
    np.testing.assert_array_equal(labels.numpy(), [[[0, IGNORE_LABEL, IGNORE_LABEL],
                                                    [2, IGNORE_LABEL, IGNORE_LABEL]]])
    np.testing.assert_array_equal(keep.numpy(), [[[True, False, False], [True, False, False]]])
    labels, _ = self_training.hard_pseudo_labels(probabilities, 0.0)
    np.testing.assert_array_equal(labels.numpy(), [[[0, 1, 2], [2, 0, 0]]])


def test_writer_keeps_exactly_the_confident_pixels_in_readable_records(tiny_data, tmp_path):
    teacher = LinearTeacher()
    spec = unlabelled_spec(tiny_data)
    threshold = 0.6
    summary = self_training.write_pseudo_labels(teacher, spec, NUM_CLASSES, str(tmp_path),
                                                threshold=threshold, num_shards=3)

    written = records.read_examples(os.path.join(str(tmp_path), "train-*.tfrecord"),
                                    NUM_CLASSES)
    ids = set(splits.read_split_file(os.path.join(tiny_data, "unlabelled_1_16.txt")))
    assert len(written) == summary["num_images"] == len(ids) == 60
    assert {ex["id"] for ex in written} == ids
    assert len(records.list_files(os.path.join(str(tmp_path), "train-*.tfrecord"))) == 3
    originals = {ex["id"]: ex for ex in records.read_examples(
        os.path.join(tiny_data, "train-*.tfrecord"), NUM_CLASSES) if ex["id"] in ids}

    kept = pixels = scored = correct = 0
    for ex in written:
        original = originals[ex["id"]]
        assert ex["filename"] == original["filename"]
        np.testing.assert_array_equal(ex["image"], original["image"])  # Same image bytes.
        assert ex["has_mask"] and not ex["has_class_labels"]  # No image labels carried over.
        probabilities = teacher.probabilities_np(ex["image"])
        confidence = probabilities.max(-1)
        expected = np.where(confidence > threshold, probabilities.argmax(-1), IGNORE_LABEL)
        top2 = np.sort(probabilities, -1)[..., -2:]
        # float32 in TensorFlow against float64 here: only pixels on a knife edge may differ.
        edge = (np.abs(confidence - threshold) < 1e-4) | (top2[..., 1] - top2[..., 0] < 1e-4)
        differ = ex["label"] != expected
        assert not np.any(differ & ~edge), ex["id"]
        keep = ex["label"] != IGNORE_LABEL
        kept += int(keep.sum())
        pixels += keep.size
        truth = original["label"]
        known = keep & (truth != IGNORE_LABEL)
        scored += int(known.sum())
        correct += int((ex["label"][known] == truth[known]).sum())
    assert 0.05 < kept / pixels < 0.95, kept / pixels  # Both kept and ignored pixels occur.
    assert summary["kept_pixels"] == kept and summary["num_pixels"] == pixels
    assert summary["kept_fraction"] == pytest.approx(kept / pixels)
    assert summary["scored_pixels"] == scored
    assert summary["accuracy"] == pytest.approx(correct / scored)

    # The written records serve as a labelled stream (masks present, ids selectable).
    batch = next(iter(pipeline.labelled_dataset(
        pipeline.DatasetSpec(os.path.join(str(tmp_path), "train-*.tfrecord")), batch_size=4,
        num_classes=NUM_CLASSES, crop_size=(33, 33), seed=0)))
    assert batch["label"].shape == (4, 33, 33)


def test_pixels_a_relabel_leaves_unnamed_are_not_kept_and_not_named_right(tiny_data, tmp_path):
    teacher = LinearTeacher()
    spec = unlabelled_spec(tiny_data)

    def relabel(image, probabilities):  # The left half unnamed, the right half class 1.
        labels = np.ones(probabilities.shape[:2], np.int32)
        labels[:, :labels.shape[1] // 2] = IGNORE_LABEL
        return labels

    summary = self_training.write_pseudo_labels(teacher, spec, NUM_CLASSES, str(tmp_path),
                                                threshold=0.0, num_shards=1, relabel=relabel)
    written = records.read_examples(os.path.join(str(tmp_path), "train-*.tfrecord"),
                                    NUM_CLASSES)
    originals = {ex["id"]: ex for ex in records.read_examples(
        os.path.join(tiny_data, "train-*.tfrecord"), NUM_CLASSES)}
    kept = pixels = foreground = right = 0
    for ex in written:
        left = ex["label"].shape[1] // 2
        assert np.all(ex["label"][:, :left] == IGNORE_LABEL) and np.all(ex["label"][:, left:] == 1)
        kept += int((ex["label"] != IGNORE_LABEL).sum())
        pixels += ex["label"].size
        truth = originals[ex["id"]]["label"]
        known_foreground = (truth != IGNORE_LABEL) & (truth > 0)
        foreground += int(known_foreground.sum())
        right += int((known_foreground & (ex["label"] == truth)).sum())
    assert summary["kept_pixels"] == kept < pixels
    # Over all of the foreground, the unnamed half included: unnamed pixels are not right.
    assert summary["foreground_accuracy"] == pytest.approx(right / foreground)


def test_labels_are_made_once_reused_and_redone_after_an_interrupted_write(
        tiny_data, tmp_path, monkeypatch, capsys):
    loads = []

    def load_teacher(checkpoint, num_classes):
        loads.append(checkpoint)
        return LinearTeacher(num_classes)

    monkeypatch.setattr(self_training, "_load_teacher", load_teacher)
    monkeypatch.setattr(self_training, "resolve_teacher", lambda path: path + "/ckpt-7")
    spec = unlabelled_spec(tiny_data)
    directory = str(tmp_path / "pseudo_labels")

    def prepare(**kwargs):
        return self_training.prepare_pseudo_labels(directory, "teacher_dir", spec, NUM_CLASSES,
                                                   **kwargs)

    marker = prepare(num_shards=2)
    assert loads == ["teacher_dir/ckpt-7"]
    assert marker == self_training.read_marker(directory)
    assert marker["num_images"] == 60 and marker["teacher_checkpoint_path"].endswith("ckpt-7")
    assert marker["settings"]["threshold"] == 0.5
    out = capsys.readouterr().out
    assert "60 images" in out and "% of pixels kept" in out
    files = sorted(os.listdir(directory))
    stamps = {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in files}

    # Complete labels are reused as they are, by the chief and by other workers.
    assert prepare(num_shards=2) == marker
    assert prepare(num_shards=2, chief=False) == marker
    assert loads == ["teacher_dir/ckpt-7"]
    assert "Reusing the pseudo labels" in capsys.readouterr().out
    assert {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in files} == stamps

    # Labels made with other settings are not reused silently.
    with pytest.raises(ValueError, match=r"threshold 0.5 \(this run: 0.7\)"):
        prepare(num_shards=2, threshold=0.7)
    with pytest.raises(ValueError, match="self_training.threshold=1.5"):
        prepare(threshold=1.5)

    # An interrupted write (no marker, a partial shard) is removed and done again.
    os.remove(os.path.join(directory, self_training.MARKER_FILENAME))
    with open(os.path.join(directory, ".train-00000-of-00002.tfrecord.tmp"), "w") as f:
        f.write("partial")
    with pytest.raises(TimeoutError, match="self_training.wait_secs"):
        prepare(num_shards=2, chief=False, wait_secs=0)
    again = prepare(num_shards=2)
    assert len(loads) == 2
    assert "Removing the incomplete pseudo labels" in capsys.readouterr().out
    assert sorted(os.listdir(directory)) == files
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in marker.items() if k != "seconds"}


def test_self_training_loss_is_cross_entropy_over_both_batches_and_l_x_over_labelled():
    teacher = LinearTeacher(num_classes=3, scale=2.0)
    rng = np.random.default_rng(1)

    def batch(size):
        images = rng.uniform(0, 255, (size, 5, 6, 3)).astype(np.float32)
        labels = rng.integers(0, 3, (size, 5, 6)).astype(np.int32)
        labels[rng.uniform(size=labels.shape) < 0.3] = IGNORE_LABEL
        return {"image": tf.constant(images), "label": tf.constant(labels),
                "class_labels": tf.constant(rng.integers(0, 2, (size, 2)), tf.float32)}

    labelled, pseudo = batch(2), batch(3)
    objective = PseudoSegObjective(teacher, None, mode="self_training", weight_decay=0.0)
    assert objective.uses_unlabelled_stream and not objective.makes_pseudo_labels
    total, named, strong = objective.compute_losses(labelled, pseudo)
    assert strong is None and set(named) == {"loss_s", "loss_x", "loss_wd"}

    def cross_entropy_sum(part):
        probabilities = np.stack([teacher.probabilities_np(image) for image in
                                  part["image"].numpy()])
        labels = part["label"].numpy()
        keep = labels != IGNORE_LABEL
        picked = np.take_along_axis(probabilities, np.where(keep, labels, 0)[..., None], -1)
        return -np.log(picked[..., 0])[keep].sum(), keep.sum()

    (sum_l, n_l), (sum_p, n_p) = cross_entropy_sum(labelled), cross_entropy_sum(pseudo)
    pooled = (sum_l + sum_p) / (n_l + n_p)
    assert named["loss_s"].numpy() == pytest.approx(pooled, rel=1e-5)
    assert abs(pooled - (sum_l / n_l + sum_p / n_p) / 2) > 1e-3  # Not a mean of two means.
    expected_x = losses.classification_loss(teacher(labelled["image"])["cls_logits"],
                                            labelled["class_labels"])
    assert named["loss_x"].numpy() == pytest.approx(expected_x.numpy(), rel=1e-6)
    assert total.numpy() == pytest.approx(named["loss_s"].numpy() + named["loss_x"].numpy())


@pytest.mark.slow
def test_self_training_run_trains_and_reuses_its_pseudo_labels(tiny_data, tmp_path, capsys):
    teacher_dir = str(tmp_path / "teacher")
    configure_demo("demo_supervised.gin", tiny_data, steps=1)
    trainer.train(teacher_dir)
    gin.clear_config()

    student_dir = str(tmp_path / "student")
    extra = [f"train.teacher_checkpoint = '{teacher_dir}'",
             # A teacher of one step is nowhere confident (about 1 / C): keep every pixel so
             # that the student sees pseudo labels (the threshold is tested above).
             "self_training.threshold = 0.0", "self_training.num_shards = 2"]
    configure_demo("demo_self_training.gin", tiny_data, steps=2, extra=extra)
    result = trainer.train(student_dir)
    assert result["step"] == 2 and result["finished"]
    for key in ("loss_s", "loss_x", "loss_sa", "loss_wd", "loss_total"):
        assert np.isfinite(result[key]), (key, result[key])
    assert "loss_u" not in result
    summary = result["self_training"]
    assert summary["num_images"] == 60
    assert summary["teacher_checkpoint_path"].endswith("ckpt-1")
    assert summary["settings"]["threshold"] == 0.0
    assert summary["kept_fraction"] == 1.0
    out = capsys.readouterr().out
    assert "Making pseudo labels with the teacher" in out and "60 images" in out

    directory = self_training.pseudo_label_dir(student_dir)
    written = records.read_examples(os.path.join(directory, "train-*.tfrecord"), NUM_CLASSES)
    masks = np.stack([ex["label"] for ex in written])
    assert np.mean(masks != IGNORE_LABEL) == pytest.approx(summary["kept_fraction"])
    with open(os.path.join(student_dir, "train_result.json")) as f:
        assert json.load(f)["self_training"]["num_images"] == 60

    # A second call (here: nothing left to train) reuses the labels without rewriting them.
    stamps = {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in os.listdir(directory)}
    gin.clear_config()
    configure_demo("demo_self_training.gin", tiny_data, steps=2, extra=extra)
    again = trainer.train(student_dir)
    assert again["step"] == 2
    assert "Reusing the pseudo labels" in capsys.readouterr().out
    assert {n: os.stat(os.path.join(directory, n)).st_mtime_ns
            for n in os.listdir(directory)} == stamps


def test_missing_teacher_checkpoint_is_named(tiny_data, tmp_path):
    configure_demo("demo_self_training.gin", tiny_data, steps=1)
    with pytest.raises(ValueError, match="needs train.teacher_checkpoint"):
        trainer.train(str(tmp_path / "no_teacher"))
    gin.clear_config()
    missing = str(tmp_path / "no_such_run")
    configure_demo("demo_self_training.gin", tiny_data, steps=1,
              extra=[f"train.teacher_checkpoint = '{missing}'"])
    with pytest.raises(ValueError, match=f"train.teacher_checkpoint='{missing}'"):
        trainer.train(str(tmp_path / "student"))
    assert not tf.io.gfile.glob(str(tmp_path / "student" / "ckpt-*"))
    assert self_training.read_marker(
        self_training.pseudo_label_dir(str(tmp_path / "student"))) is None
    gin.clear_config()
    own = str(tmp_path / "own")
    configure_demo("demo_self_training.gin", tiny_data, steps=1,
              extra=[f"train.teacher_checkpoint = '{own}'"])
    with pytest.raises(ValueError, match="own --logdir"):
        trainer.train(own)


def test_the_background_bias_gives_the_wanted_background_share():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 50, 4)) * 2.0
    logits[..., 0] += 1.5  # A teacher that prefers the background.
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ratios = self_training.background_log_ratios(probabilities, max_pixels=10 ** 6)
    expected = np.log(probabilities[..., 0]) - np.log(probabilities[..., 1:].max(-1))
    np.testing.assert_allclose(ratios, expected.ravel(), rtol=1e-10)
    # A strided sample: every 2nd row and column for at most 500 of the 2000 pixels.
    assert len(self_training.background_log_ratios(probabilities, max_pixels=500)) == 500
    for share in (0.3, 0.5, 0.8):
        bias = self_training.background_bias_for_share(ratios, share)
        adjusted = self_training.with_background_bias(
            tf.constant(probabilities, tf.float64), bias).numpy()
        # Reference: the background's probability divided by exp(bias), renormalised.
        scaled = probabilities * np.array([np.exp(-bias), 1.0, 1.0, 1.0])
        np.testing.assert_allclose(adjusted, scaled / scaled.sum(-1, keepdims=True),
                                   rtol=1e-12)
        assert np.mean(adjusted.argmax(-1) == 0) == pytest.approx(share, abs=1e-3)
    assert (self_training.background_bias_for_share(ratios, 0.9)
            < self_training.background_bias_for_share(ratios, 0.5))
    unchanged = self_training.with_background_bias(tf.constant(probabilities, tf.float32), 0.0)
    np.testing.assert_allclose(unchanged.numpy(), probabilities, rtol=1e-6)
    # The band is exactly the pixels whose argmax the bias moves to or from the background.
    for bias in (-0.7, 0.0, 0.9):
        band = self_training.background_band(tf.constant(probabilities, tf.float64), bias)
        moved = self_training.with_background_bias(
            tf.constant(probabilities, tf.float64), bias).numpy().argmax(-1)
        np.testing.assert_array_equal(band.numpy(), moved != probabilities.argmax(-1))


def test_the_writer_biases_the_background_to_the_share_it_is_given(tiny_data, tmp_path):
    teacher = LinearTeacher()
    spec = unlabelled_spec(tiny_data)
    plain = self_training.write_pseudo_labels(teacher, spec, NUM_CLASSES, str(tmp_path / "a"),
                                              threshold=0.0, num_shards=1)
    assert "background_bias" not in plain
    written = records.read_examples(str(tmp_path / "a" / "train-*.tfrecord"), NUM_CLASSES)
    plain_share = np.mean(np.concatenate([(ex["label"] == 0).ravel() for ex in written]))
    target = plain_share + 0.1
    summary = self_training.write_pseudo_labels(
        teacher, spec, NUM_CLASSES, str(tmp_path / "b"), threshold=0.0, num_shards=1,
        background_share=target, prior_images=1000)
    assert summary["background_share_target"] == target
    assert summary["background_bias"] < 0  # More background than the teacher's argmax.
    written = records.read_examples(str(tmp_path / "b" / "train-*.tfrecord"), NUM_CLASSES)
    # Every image took part in the first pass: the share holds over all of them, up to the
    # pixels tied at the quantile and float32 against float64.
    share = np.mean(np.concatenate([(ex["label"] == 0).ravel() for ex in written]))
    assert share == pytest.approx(target, abs=0.01)
    for ex in written[:5]:  # Each label is the argmax of the biased probabilities.
        probabilities = teacher.probabilities_np(ex["image"])
        probabilities[..., 0] *= np.exp(-summary["background_bias"])
        expected = probabilities.argmax(-1)
        top2 = np.sort(probabilities, -1)[..., -2:]
        edge = top2[..., 1] - top2[..., 0] < 1e-4 * top2[..., 1]
        assert not np.any((ex["label"] != expected) & ~edge), ex["id"]


def test_the_writer_can_ignore_the_pixels_the_background_bias_would_change(tiny_data, tmp_path):
    teacher = LinearTeacher()
    spec = unlabelled_spec(tiny_data)
    target = 0.5
    summary = self_training.write_pseudo_labels(
        teacher, spec, NUM_CLASSES, str(tmp_path), threshold=0.0, num_shards=1,
        background_share=target, background_mode="ignore", prior_images=1000)
    bias = summary["background_bias"]
    assert summary["background_mode"] == "ignore" and summary["kept_fraction"] < 1.0
    written = records.read_examples(str(tmp_path / "train-*.tfrecord"), NUM_CLASSES)
    ignored = 0
    for ex in written:
        probabilities = teacher.probabilities_np(ex["image"])
        ratio = np.log(probabilities[..., 0]) - np.log(probabilities[..., 1:].max(-1))
        band = (ratio > min(bias, 0.0)) & (ratio <= max(bias, 0.0))
        expected = np.where(band, IGNORE_LABEL, probabilities.argmax(-1))
        edge = (np.abs(ratio) < 1e-4) | (np.abs(ratio - bias) < 1e-4)
        top2 = np.sort(probabilities, -1)[..., -2:]
        edge |= top2[..., 1] - top2[..., 0] < 1e-4 * top2[..., 1]
        assert not np.any((ex["label"] != expected) & ~edge), ex["id"]
        ignored += int(np.sum(ex["label"] == IGNORE_LABEL))
    assert ignored == summary["num_pixels"] - summary["kept_pixels"] > 0
    with pytest.raises(ValueError, match="background_mode"):
        self_training.write_pseudo_labels(teacher, spec, NUM_CLASSES, str(tmp_path / "x"),
                                          background_share=0.5, background_mode="drop")
