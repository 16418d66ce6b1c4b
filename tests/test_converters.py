"""Tests of the converters on tiny fake VOC, SBD, COCO and Cityscapes trees (real layouts)."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from script_loading import load_script

from wss.data import pipeline, records, splits

H, W = 20, 30


def _script(name):
    return load_script(f"datasets/{name}.py")


def _jpeg(path, seed, h=H, w=W):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _palette_png(path, mask):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def _mask(cls, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[5:15, 5:20] = cls
    m[4, 5:20] = 255  # border
    return m


def _fake_voc(root):
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    voc_ids = {"2007_000001": 1, "2007_000002": 2, "2007_000003": 3}
    for k, (i, cls) in enumerate(voc_ids.items()):
        _jpeg(str(voc / "JPEGImages" / f"{i}.jpg"), k)
        _palette_png(str(voc / "SegmentationClass" / f"{i}.png"), _mask(cls))
    for k, i in enumerate(["2008_000004", "2008_000005"]):
        _jpeg(str(voc / "JPEGImages" / f"{i}.jpg"), 10 + k)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000002\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\n")
    import scipy.io

    (sbd / "cls").mkdir(parents=True)
    for i, cls in [("2007_000002", 2), ("2008_000004", 4), ("2008_000005", 20),
                   ("2007_000003", 3)]:
        seg = _mask(cls)
        seg[seg == 255] = 0  # SBD has no border label
        scipy.io.savemat(str(sbd / "cls" / f"{i}.mat"),
                         {"GTcls": {"Segmentation": seg, "CategoriesPresent": [cls]}})
    (sbd / "train.txt").write_text("2007_000002\n2008_000004\n")
    (sbd / "val.txt").write_text("2008_000005\n2007_000003\n")
    return str(voc), str(sbd)


def test_voc_and_sbd(tmp_path, capsys):
    voc, sbd = _fake_voc(tmp_path)
    out = str(tmp_path / "out")
    counts = _script("build_voc2012").main(
        [f"--voc_root={voc}", f"--sbd_root={sbd}", f"--output_dir={out}", "--num_shards=2"])
    assert {k: v["examples"] for k, v in counts.items()} == {"train": 2, "val": 1,
                                                             "train_aug": 4}
    assert "train_aug: 4 examples" in capsys.readouterr().out
    assert splits.read_split_file(os.path.join(out, "train_aug.txt")) == [
        "2007_000001", "2007_000002", "2008_000004", "2008_000005"]
    got = {e["id"]: e for e in records.read_examples(os.path.join(out, "train_aug-*"), 21)}
    np.testing.assert_array_equal(got["2007_000001"]["label"], _mask(1))  # VOC, with border
    sbd_mask = _mask(20)
    sbd_mask[sbd_mask == 255] = 0
    np.testing.assert_array_equal(got["2008_000005"]["label"], sbd_mask)
    assert got["2008_000004"]["image"].shape == (H, W, 3)
    # The converted records feed the pipeline.
    batch = next(iter(pipeline.labelled_dataset(
        pipeline.DatasetSpec(os.path.join(out, "train_aug-*"),
                             os.path.join(out, "train.txt")), 2, 21, crop_size=(24, 24))))
    assert set(batch["filename"].numpy()) <= {b"2007_000001", b"2007_000002"}
    # Without SBD: train and val only.
    counts = _script("build_voc2012").main([f"--voc_root={voc}", f"--output_dir={out}2"])
    assert set(counts) == {"train", "val"}


def test_voc_errors(tmp_path):
    voc, _ = _fake_voc(tmp_path)
    build = _script("build_voc2012").build
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build(str(tmp_path / "nowhere"), str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="SBD.*missing_sbd"):
        build(voc, str(tmp_path / "o"), sbd_root=str(tmp_path / "missing_sbd"))
    # Non-palette mask.
    bad = os.path.join(voc, "SegmentationClass", "2007_000001.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(bad)
    with pytest.raises(records.RecordError, match="2007_000001.png.*palette"):
        build(voc, str(tmp_path / "o"))
    # Mask of another size.
    _palette_png(bad, _mask(1, h=10))
    with pytest.raises(records.RecordError, match="2007_000001.png.*20x30.*10x30"):
        build(voc, str(tmp_path / "o"))
    # Unknown class id.
    _palette_png(bad, _mask(33))
    with pytest.raises(records.RecordError, match=r"2007_000001.png.*\[33\]"):
        build(voc, str(tmp_path / "o"))
    # Missing image.
    _palette_png(bad, _mask(1))
    os.remove(os.path.join(voc, "JPEGImages", "2007_000002.jpg"))
    with pytest.raises(FileNotFoundError, match="2007_000002.jpg"):
        build(voc, str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o" / "train-00000-of-00001.tfrecord")


def _fake_coco(root):
    coco = root / "coco"
    names = {1: "000000000001.jpg", 2: "000000000002.jpg"}
    for k, name in names.items():
        _jpeg(str(coco / "train2017" / name), k)
    for k in range(2):
        _jpeg(str(coco / "unlabeled2017" / f"00000000100{k}.jpg"), 20 + k)
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[15:20, 0:10] = 1
    # Uncompressed RLE (column-major run lengths), as the instances JSON stores crowds.
    flat = crowd.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    ann = {
        "images": [{"id": k, "file_name": n, "height": H, "width": W} for k, n in names.items()],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                       {"id": 90, "name": "toothbrush"}],
        "annotations": [
            # A large "person" box and a small "toothbrush" on it.
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 200,
             "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]], "bbox": [0, 0, 20, 10]},
            {"id": 2, "image_id": 1, "category_id": 90, "iscrowd": 0, "area": 16,
             "segmentation": [[4, 4, 8, 4, 8, 8, 4, 8]], "bbox": [4, 4, 4, 4]},
            {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 50,
             "segmentation": {"counts": counts, "size": [H, W]}, "bbox": [0, 15, 10, 5]},
        ],
    }
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    return str(coco)


def test_coco(tmp_path):
    pytest.importorskip("pycocotools")
    coco = _fake_coco(tmp_path)
    out = str(tmp_path / "out")
    build_coco = _script("build_coco")
    counts = build_coco.main([f"--coco_root={coco}", "--split=train2017",
                              f"--output_dir={out}", "--num_shards=1"])
    assert counts["train2017"]["examples"] == 2
    got = {e["id"]: e for e in records.read_examples(os.path.join(out, "train2017-*"), 81)}
    label = got["000000000001"]["label"]
    assert label[1, 1] == 1  # person -> class 1
    assert label[6, 6] == 3  # toothbrush (3rd category) on top of the person
    assert label[17, 2] == 255  # crowd car -> ignored
    assert label[17, 25] == 0
    assert (got["000000000002"]["label"] == 0).all()
    counts = build_coco.main([f"--coco_root={coco}", "--split=unlabeled2017",
                              f"--output_dir={out}"])
    unl = records.read_examples(os.path.join(out, "unlabeled2017-*"), 81)
    assert len(unl) == 2 and not any(e["has_mask"] for e in unl)
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        os.makedirs(os.path.join(coco, "val2017"))
        build_coco.build(coco, "val2017", out)


def test_cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    for split, city, n in [("train", "aachen", 2), ("val", "lindau", 1)]:
        for k in range(n):
            stem = f"{city}_00000{k}_000019"
            path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            os.makedirs(path.parent, exist_ok=True)
            Image.fromarray(np.full((H, W, 3), 50 * k, np.uint8)).save(path)
            label = np.zeros((H, W), np.uint8)  # unlabeled -> 255
            label[:10] = 7  # road -> 0
            label[10:, :10] = 26  # car -> 13
            lpath = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            os.makedirs(lpath.parent, exist_ok=True)
            Image.fromarray(label).save(lpath)
    out = str(tmp_path / "out")
    counts = _script("build_cityscapes").main(
        [f"--cityscapes_root={root}", f"--output_dir={out}", "--num_shards=1"])
    assert counts["train"]["examples"] == 2 and counts["val"]["examples"] == 1
    (ex,) = records.read_examples(os.path.join(out, "val-*"), 19)
    assert ex["id"] == "lindau_000000_000019"
    assert ex["label"][0, 0] == 0 and ex["label"][15, 2] == 13 and ex["label"][15, 25] == 255
    with pytest.raises(FileNotFoundError, match="gtFine/test"):
        os.makedirs(root / "leftImg8bit" / "test")
        _script("build_cityscapes").build(str(root), out, splits=("test",))


def test_make_splits_on_converted_voc(tmp_path):
    voc, sbd = _fake_voc(tmp_path)
    out = str(tmp_path / "out")
    _script("build_voc2012").build(voc, out, sbd, num_shards=1, train_aug_shards=1)
    result = _script("make_splits").main([
        f"--records={out}/train_aug-*", "--num_classes=21", "--denominators=1",
        f"--labelled_pool={out}/train.txt", f"--output_dir={tmp_path / 'splits'}",
        "--name=voc"])
    assert result == {1: (2, 2)}
    labelled = splits.read_split_file(str(tmp_path / "splits" / "voc_1-1_labelled.txt"))
    unlabelled = splits.read_split_file(str(tmp_path / "splits" / "voc_1-1_unlabelled.txt"))
    assert labelled == ["2007_000001", "2007_000002"]
    assert unlabelled == ["2008_000004", "2008_000005"]
    # Half of the two labelled-pool images cannot hold both of their classes.
    with pytest.raises(ValueError, match="covered every class"):
        _script("make_splits").main([
            f"--records={out}/train_aug-*", "--num_classes=21", "--denominators=2",
            f"--labelled_pool={out}/train.txt", f"--output_dir={tmp_path / 'splits'}",
            "--max_tries=20"])
