"""Your own data: build_folder.py on a small folder tree, own_semi.gin, split hygiene, best/last."""

import json
import math
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from script_loading import load_script

from wss import experiment
from wss.data import folder, hygiene, pipeline, records, splits
from wss.evaluation import evaluator as evaluation
from wss.training import trainer

S = 32  # Image side.


def _script():
    return load_script("datasets/build_folder.py")


def _image(path, seed, mode="RGB", size=(S, S)):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[0], size[1], 4), dtype=np.uint8)
    array = {"RGB": array[..., :3], "RGBA": array, "L": array[..., 0]}[mode]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _mask(path, cls, palette=False, size=(S, S)):
    m = np.zeros(size, np.uint8)
    m[4:20, 6:24] = cls
    m[3, :] = 255
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(m, mode="P" if palette else "L")
    if palette:
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (5 * i) % 256)])
    im.save(path)


def _tree(root, bad=True):
    """Images and masks: JPEG/PNG, a palette mask, an RGBA and a grey image, 4 unlabelled.

    With `bad`, also: a mask of the wrong size, a mask without an image, an unreadable image,
    and a mask with an unknown class.
    """
    images, masks, unlabelled = root / "images", root / "masks", root / "unlabelled"
    for k in range(6):
        ext = "jpg" if k % 2 else "png"
        mode = {2: "RGBA", 3: "L"}.get(k, "RGB")
        _image(str(images / f"img{k}.{ext}"), k, mode)
        _mask(str(masks / f"img{k}.png"), 1 + k % 2, palette=k == 0)
    _image(str(images / "nomask.jpg"), 50)  # No mask: joins the unlabelled split.
    for k in range(3):
        _image(str(unlabelled / f"u{k}.jpg"), 100 + k)
    if bad:
        _image(str(images / "small.png"), 7)
        _mask(str(masks / "small.png"), 1, size=(S - 4, S))
        _mask(str(masks / "orphan.png"), 1)
        (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
        _mask(str(masks / "broken.png"), 1)
        _image(str(images / "alien.png"), 8)
        _mask(str(masks / "alien.png"), 9)
    (root / "classes.txt").write_text("background\ncircle\nsquare\n")
    return images, masks, unlabelled


def _build(root, **kwargs):
    images, masks, unlabelled = _tree(root, bad=kwargs.pop("bad", True))
    args = [f"--images={images}", f"--masks={masks}", f"--unlabelled={unlabelled}",
            f"--class_names={root / 'classes.txt'}", f"--output_dir={root / 'out'}",
            "--val_fraction=0.34"]
    args += [f"--{k}" if v is True else f"--{k}={v}" for k, v in kwargs.items()]
    return _script().main(args)


def test_build_folder_lists_every_bad_file(tmp_path):
    with pytest.raises(folder.BuildError) as raised:
        _build(tmp_path)
    message = str(raised.value)
    assert "4 problem(s)" in message
    assert "small.png: mask is 28x32 but its image" in message
    assert "orphan.png: mask without an image" in message
    assert "broken.jpg: cannot read the image" in message
    assert "alien.png: mask values [9] are not classes (0..2, 255 = ignore)" in message
    assert "--skip_bad" in message
    assert not (tmp_path / "out").exists()  # Nothing written.


def test_build_folder_skip_bad_converts_the_rest(tmp_path):
    info = _build(tmp_path, skip_bad=True)
    out = tmp_path / "out"
    assert info["num_classes"] == 3 and info["class_names"] == ["background", "circle", "square"]
    assert (info["labelled"], info["val"], info["unlabelled"]) == (4, 2, 4)
    assert len(info["skipped"]) == 4 and "orphan.png" in (out / "skipped.txt").read_text()
    labelled = splits.read_split_file(str(out / "labelled.txt"))
    unlabelled = splits.read_split_file(str(out / "unlabelled.txt"))
    val = splits.read_split_file(str(out / "val.txt"))
    assert not set(labelled) & set(unlabelled) and not set(labelled) & set(val)
    assert set(labelled) | set(val) == {f"img{k}" for k in range(6)}
    assert set(unlabelled) == {"nomask", "u0", "u1", "u2"}
    train = {e["id"]: e for e in records.read_examples(str(out / "train-*.tfrecord"), 3)}
    assert set(train) == set(labelled) | set(unlabelled)
    for e in train.values():
        assert e["image"].shape == (S, S, 3)
    # The RGBA and grey images became RGB; the grey one has three equal channels.
    examples = dict(train, **{e["id"]: e for e in records.read_examples(
        str(out / "val-*.tfrecord"), 3)})
    grey = examples["img3"]["image"]
    assert np.array_equal(grey[..., 0], grey[..., 2])
    rgba = np.asarray(Image.open(tmp_path / "images" / "img2.png").convert("RGB"))
    assert np.array_equal(examples["img2"]["image"], rgba)
    # The palette mask's indices are the class ids; 255 stays ignore.
    assert set(np.unique(examples["img0"]["label"])) == {0, 1, 255}
    assert not train["u0"]["has_mask"]
    assert folder.folder_dataset_info(str(out), "class_names") == ("background", "circle",
                                                                    "square")


def test_image_labels_csv_names_and_ids(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("id,labels\nu0,circle square\nu1.jpg,2\nnomask,\n")
    info = _build(tmp_path, bad=False, image_labels=csv)
    assert info["image_labelled"] == 3
    examples = {e["id"]: e for e in records.read_examples(
        str(tmp_path / "out" / "train-*.tfrecord"), 3)}
    assert examples["u0"]["class_ids"].tolist() == [1, 2]
    assert examples["u1"]["class_ids"].tolist() == [2]
    assert examples["nomask"]["has_class_labels"] and examples["u2"]["has_class_labels"]

    csv.write_text("u0,circle triangle\nghost,1\n")
    with pytest.raises(folder.BuildError) as raised:
        _build(tmp_path, bad=False, image_labels=csv)
    assert "labels.csv:1: unknown class 'triangle'" in str(raised.value)
    assert "image 'ghost' has labels but no image file" in str(raised.value)


def test_split_val_is_seeded_and_stable():
    ids = [f"i{k}" for k in range(20)]
    kept, held = folder.split_val(ids, 0.25, seed=0)
    assert len(held) == 5 and sorted(kept + held) == sorted(ids)
    assert folder.split_val(list(reversed(ids)), 0.25, seed=0) == (kept, held)
    assert folder.split_val(ids, 0.25, seed=1)[1] != held
    assert folder.split_val(ids[:1], 0.5, seed=0) == (ids[:1], [])


@pytest.fixture(scope="module")
def own_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    _build(root, bad=False)
    return root / "out"


def test_check_splits_counts_and_rejects_overlap_and_empty(own_records, tmp_path, capsys):
    out = str(own_records)
    pattern = os.path.join(out, "train-*.tfrecord")
    labelled = pipeline.DatasetSpec(pattern, os.path.join(out, "labelled.txt"))
    unlabelled = pipeline.DatasetSpec(pattern, os.path.join(out, "unlabelled.txt"))
    val = pipeline.DatasetSpec(os.path.join(out, "val-*.tfrecord"))
    counts = hygiene.check_splits(labelled, unlabelled, val)
    assert counts == {"labelled": 4, "unlabelled": 4, "eval": 2}
    assert "Data: 4 labelled images" in capsys.readouterr().out

    # The whole train set as unlabelled: the labelled ids are in both.
    with pytest.raises(ValueError, match=r"4 labelled image\(s\) are also in the unlabelled "
                                         r"stream: img.*allow_overlap"):
        hygiene.check_splits(labelled, pipeline.DatasetSpec(pattern), val)
    counts = hygiene.check_splits(labelled, pipeline.DatasetSpec(pattern), val,
                                  allow_overlap=True)
    assert counts["unlabelled"] == 8
    # Excluding the labelled list fixes it (as voc_semi.gin's unlabelled stream).
    rest = pipeline.DatasetSpec(pattern, exclude_file=labelled.split_file)
    assert hygiene.check_splits(labelled, rest)["unlabelled"] == 4

    everything = tmp_path / "all.txt"
    splits.write_split_file(splits.read_split_file(labelled.split_file), str(everything))
    with pytest.raises(ValueError, match="the unlabelled stream is empty"):
        hygiene.check_splits(labelled, pipeline.DatasetSpec(pattern, str(everything),
                                                            str(everything)))
    ghost = tmp_path / "ghost.txt"
    ghost.write_text(f"{splits.read_split_file(labelled.split_file)[0]}\nghost\n")
    with pytest.raises(ValueError, match=r"1 id\(s\) of split file .*ghost.txt are not in "
                                         r"the records .*: ghost"):
        hygiene.check_splits(pipeline.DatasetSpec(pattern, str(ghost)))
    with pytest.raises(FileNotFoundError, match="evaluation set .*no-val-.*after_training"):
        hygiene.check_splits(labelled, None, pipeline.DatasetSpec(out + "/no-val-*"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        hygiene.check_splits(pipeline.DatasetSpec(pattern, str(empty)))


def _fake_checkpoint(directory, step, value):
    variable = tf.Variable(float(value))
    path = tf.train.Checkpoint(v=variable).write(os.path.join(directory, f"ckpt-{step}"))
    tf.compat.v1.train.update_checkpoint_state(directory, path)
    return path


def test_track_best_keeps_a_copy_and_replaces_it_only_when_better(tmp_path):
    logdir = str(tmp_path)
    (tmp_path / "config.gin").write_text("# config\n")
    first = _fake_checkpoint(logdir, 1, 1.0)
    best = evaluation.track_best(first, {"miou": 0.5})
    assert best["step"] == 1 and best["source"] == first
    assert os.path.exists(best["checkpoint"] + ".index")
    assert tf.train.latest_checkpoint(os.path.join(logdir, "best")) == best["checkpoint"]
    assert (tmp_path / "best" / "config.gin").exists()

    second = _fake_checkpoint(logdir, 2, 2.0)
    assert evaluation.track_best(second, {"miou": 0.4})["step"] == 1  # Worse.
    assert evaluation.track_best(second, {"miou": 0.5})["step"] == 1  # A tie keeps the first.
    assert evaluation.track_best(second, {"miou": float("nan")})["step"] == 1
    third = _fake_checkpoint(logdir, 3, 3.0)
    best = evaluation.track_best(third, {"miou": 0.7})
    assert best["step"] == 3
    left = sorted(os.listdir(tmp_path / "best"))
    assert not [f for f in left if f.startswith("ckpt-1")], left
    # The kept copy survives the deletion of the original (train.max_to_keep).
    for f in tf.io.gfile.glob(third + ".*"):
        os.remove(f)
    reader = tf.train.load_checkpoint(best["checkpoint"])
    assert reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE") == 3.0
    with open(best["results"]) as f:
        assert json.load(f)["source"] == third

    _fake_checkpoint(logdir, 4, 4.0)
    report = evaluation.best_and_last(logdir)
    assert report["last"]["step"] == 4 and report["last"]["miou"] is None
    assert report["best"]["step"] == 3 and len(report["history"]) == 3
    text = evaluation.format_best_and_last(report)
    assert "Last checkpoint: " in text and "not evaluated" in text
    assert "Best checkpoint: " in text and "mIoU 70.00%" in text


def tiny_own_bindings(own_dir, steps=2, extra=()):
    """own_semi.gin shrunk to a seconds-long run (never pretrains or downloads)."""
    return [
        f"OWN_DIR = '{own_dir}'",
        "train.init_checkpoint = None",
        f"train.num_steps = {steps}",
        "train.crop_size = (33, 33)",
        "train.labelled_batch_size = 2",
        "train.unlabelled_batch_size = 2",
        "train.log_every = 1",
        "train.image_summary_every = 0",
        "train.checkpoint_every = 1",
        "train.seed = 0",
        "build_deeplab.width_multiplier = 0.0625",
        "build_deeplab.middle_flow_units = 1",
        "make_sgc_head.attention_dim = 8",
        "StrongViewConfig.cutout_size = 8",
        "make_strategy.devices = ['/cpu:0']",
        *extra,
    ]


@pytest.mark.slow
def test_own_semi_trains_evaluates_and_reports_best_and_last(own_records, tmp_path, capsys):
    experiment.parse_experiment_config(
        gin_files=["own_semi.gin"], gin_bindings=tiny_own_bindings(str(own_records)),
        finalize=False)
    assert gin.query_parameter("train.init_checkpoint") is None
    result = trainer.train(str(tmp_path))
    assert result["step"] == 2 and math.isfinite(result["loss_total"])
    out = capsys.readouterr().out
    assert "Data: 4 labelled images" in out and "Data: 4 unlabelled images" in out
    assert "Data: 2 eval images" in out
    summary = trainer.after_training(str(tmp_path))
    # Both kept checkpoints were evaluated (after_training.evaluate_kept in own_semi.gin).
    assert summary["last"]["step"] == 2 and summary["last"]["miou"] == summary["miou"]
    assert summary["best"]["step"] in (1, 2)
    assert summary["best"]["miou"] == max(h["miou"] for h in evaluation.best_and_last(
        str(tmp_path))["history"])
    out = capsys.readouterr().out
    assert "Last checkpoint:" in out and "Best checkpoint:" in out
    assert "circle" in out  # Class names from dataset.json.
    # The best directory evaluates like a log directory.
    results, _ = evaluation.evaluate_checkpoint(os.path.join(str(tmp_path), "best"))
    assert results["miou"] == pytest.approx(summary["best"]["miou"])
