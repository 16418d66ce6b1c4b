"""The built-in synthetic dataset: determinism, splits and content."""

import hashlib
import json
import os

import numpy as np

from wss.data import records, splits, synthetic


def _digest(directory):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            digest.update(name.encode() + f.read())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(num_train=64, num_val=4, height=32, width=32)
    synthetic.generate(str(tmp_path / "a"), seed=1, **kwargs)
    synthetic.generate(str(tmp_path / "b"), seed=1, **kwargs)
    synthetic.generate(str(tmp_path / "c"), seed=2, **kwargs)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_splits_cover_every_class_and_partition_train(tmp_path):
    directory = str(tmp_path / "d")
    metadata = synthetic.generate(directory, seed=0, num_train=128, num_val=8, height=48,
                                  width=48)
    with open(os.path.join(directory, "metadata.json")) as f:
        assert json.load(f) == metadata
    train_ids = set(splits.read_split_file(os.path.join(directory, "train.txt")))
    assert len(train_ids) == 128
    examples = {e["id"]: e for e in (
        {"id": records.image_id(x["filename"]), "label": x["label"]}
        for x in records.read_examples(os.path.join(directory, "train-*.tfrecord"),
                                       synthetic.NUM_CLASSES))}
    for fraction in synthetic.LABELLED_FRACTIONS:
        labelled = splits.read_split_file(os.path.join(directory, f"labelled_1_{fraction}.txt"))
        rest = splits.read_split_file(os.path.join(directory, f"unlabelled_1_{fraction}.txt"))
        assert len(labelled) == -(-128 // fraction)
        assert set(labelled) | set(rest) == train_ids and not set(labelled) & set(rest)
        present = set()
        for image_id in labelled:
            present |= set(np.unique(np.asarray(examples[image_id]["label"])).tolist())
        assert present == set(range(synthetic.NUM_CLASSES))


def test_class_identity_is_not_colour():
    # The same class drawn twice gets unrelated colours; masks hold every class id somewhere.
    seen, colours = set(), {}
    for index in range(40):
        image, mask = synthetic.render_example(np.random.default_rng([5, index]), 64, 64)
        assert image.dtype == np.uint8 and mask.shape == (64, 64)
        for class_id in np.unique(mask):
            seen.add(int(class_id))
            if class_id:
                colours.setdefault(int(class_id), []).append(
                    image[mask == class_id].mean(axis=0))
    assert seen == set(range(synthetic.NUM_CLASSES))
    spreads = [np.std(np.stack(v), axis=0).mean() for v in colours.values() if len(v) > 3]
    assert spreads and min(spreads) > 15.0
