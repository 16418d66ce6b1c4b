"""Tests of the TFRecord schema: round trip, DeepLab records, and errors naming the file."""

import os

import numpy as np
import pytest
import tensorflow as tf

from wss.data import records

C = 5


def _image(h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _mask(h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.integers(0, C, size=(h, w)).astype(np.uint8)
    m[0, :] = 255
    return m


def test_round_trip(tmp_path):
    examples = [
        records.encode_example(_image(seed=0), "a", mask=_mask(seed=0), image_format="png"),
        records.encode_example(_image(seed=1), "b", class_labels=[3, 1], image_format="png"),
        records.encode_example(_image(seed=2), "c", image_format="png"),
    ]
    n = records.write_records(examples, str(tmp_path / "out" / "train"), num_shards=2)
    assert n == 3
    files = sorted(os.listdir(tmp_path / "out"))
    assert files == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    got = {e["filename"]: e for e in records.read_examples(str(tmp_path / "out" / "*"), C)}
    assert set(got) == {"a", "b", "c"}
    np.testing.assert_array_equal(got["a"]["image"], _image(seed=0))
    np.testing.assert_array_equal(got["a"]["label"], _mask(seed=0))
    assert got["a"]["has_mask"] and not got["a"]["has_class_labels"]
    expected = np.zeros(C - 1, np.float32)
    expected[np.unique(_mask(seed=0)[_mask(seed=0) < C])[1:] - 1] = 1
    np.testing.assert_array_equal(got["a"]["class_labels"], expected)
    assert not got["b"]["has_mask"] and got["b"]["has_class_labels"]
    np.testing.assert_array_equal(got["b"]["label"], np.full((20, 30), 255))
    np.testing.assert_array_equal(got["b"]["class_labels"], [1, 0, 1, 0])
    np.testing.assert_array_equal(got["c"]["class_labels"], np.zeros(C - 1))
    assert records.scan_records(str(tmp_path / "out" / "*"), num_classes=C) == 3


def test_jpeg_round_trip_and_ids(tmp_path):
    img = np.full((20, 30, 3), 100, np.uint8)
    ex = records.encode_example(img, "JPEGImages/2007_000032.jpg", image_format="jpeg")
    records.write_records([ex], str(tmp_path / "val"))
    (got,) = records.read_examples(str(tmp_path / "val-*"), C)
    assert np.abs(got["image"].astype(int) - 100).max() <= 2
    assert got["id"] == "2007_000032"
    assert records.image_id("a/b/x.y_1.png") == "x.y_1"


def test_deeplab_records_read(tmp_path):
    """Records written the way DeepLab's build_data.image_seg_to_tfexample writes them."""
    img = _image()
    mask = _mask()
    img_bytes = tf.io.encode_jpeg(img, quality=100).numpy()
    seg_bytes = tf.io.encode_png(mask[..., None]).numpy()

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(img_bytes),
        "image/filename": b(b"2007_000033"),
        "image/format": b(b"jpeg"),
        "image/height": i(20),
        "image/width": i(30),
        "image/channels": i(3),
        "image/segmentation/class/encoded": b(seg_bytes),
        "image/segmentation/class/format": b(b"png"),
    }))
    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(example.SerializeToString())
    (got,) = records.read_examples(path, C)
    assert got["filename"] == "2007_000033" and got["has_mask"]
    np.testing.assert_array_equal(got["label"], mask)
    assert got["image"].shape == (20, 30, 3)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def gen():
        yield records.encode_example(_image(), "a")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        records.write_records(gen(), str(tmp_path / "x"), num_shards=2)
    assert os.listdir(tmp_path) == []


def test_encode_errors_name_the_file():
    with pytest.raises(records.RecordError, match="img7.*20x30.*10x30"):
        records.encode_example(_image(), "img7", mask=np.zeros((10, 30), np.uint8))
    bad = _mask()
    bad[3, 3] = 9
    with pytest.raises(records.RecordError, match=r"img8.*\[9\]"):
        records.encode_example(_image(), "img8", mask=bad, num_classes=C)
    with pytest.raises(records.RecordError, match="img9"):
        records.encode_example(_image(), "img9", class_labels=[7], num_classes=C)
    with pytest.raises(records.RecordError, match="img10"):
        records.encode_example(b"not an image", "img10")


def _write_raw(path, feature):
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(example.SerializeToString())


def _feature(img, mask=None, name=b"bad_one"):
    f = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_png(img).numpy()])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name])),
    }
    if mask is not None:
        f["image/segmentation/class/encoded"] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_png(mask[..., None]).numpy()]))
    return f


def test_read_errors_name_the_file(tmp_path):
    # Mask of another size.
    _write_raw(tmp_path / "size.tfrecord", _feature(_image(), _mask(10, 30)))
    with pytest.raises(records.RecordError, match="size.tfrecord.*bad_one.*mask size"):
        records.read_examples(str(tmp_path / "size.tfrecord"), C)
    # Mask value outside 0..C-1 and 255.
    mask = _mask()
    mask[5, 5] = 17
    _write_raw(tmp_path / "value.tfrecord", _feature(_image(), mask))
    with pytest.raises(records.RecordError, match=r"bad_one.*\[17\] outside 0..4"):
        records.read_examples(str(tmp_path / "value.tfrecord"), C)
    # Image bytes that are no image.
    f = _feature(_image())
    f["image/encoded"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"junk"]))
    _write_raw(tmp_path / "junk.tfrecord", f)
    with pytest.raises(records.RecordError, match="junk.tfrecord.*bad_one.*neither JPEG"):
        records.scan_records(str(tmp_path / "junk.tfrecord"), num_classes=C)


def test_truncated_file_is_named(tmp_path):
    examples = [records.encode_example(_image(seed=s), f"i{s}") for s in range(3)]
    records.write_records(examples, str(tmp_path / "t"))
    (path,) = records.list_files(str(tmp_path / "t-*"))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(records.RecordError, match=r"t-00000-of-00001.tfrecord: record 2"):
        records.scan_records(path)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        records.list_files(str(tmp_path / "nothing-here*"))


def test_encoded_examples_are_byte_identical_across_processes():
    """Map fields serialise in a per-process order unless asked to be deterministic."""
    import subprocess
    import sys

    script = ("import hashlib, numpy as np\n"
              "from wss.data import records\n"
              "print(hashlib.sha256(records.encode_example(np.zeros((4, 4, 3), np.uint8), "
              "mask=np.zeros((4, 4), np.uint8), filename='a', class_labels=[1], "
              "image_format='png', num_classes=3)).hexdigest())\n")
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True).stdout.split()[-1] for _ in range(2)}
    assert len(digests) == 1
