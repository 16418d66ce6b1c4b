"""benchmarks/reference_cnn.py: the plain reference network, its loss and its training run."""

import os

import numpy as np
import pytest
import tensorflow as tf
from script_loading import load_script

from wss.data import records

NUM_CLASSES = 3
SMALL = dict(stem_channels=8, block_channels=(8, 8, 8), aspp_channels=8, low_level_channels=4,
             decoder_channels=8, batch_norm_momentum=0.8)


@pytest.fixture(scope="module")
def reference_cnn():
    return load_script("benchmarks/reference_cnn.py")


def test_logits_have_the_input_size_and_the_issue_network_has_about_150k_params(reference_cnn):
    model = reference_cnn.build_reference_cnn(9)
    assert 120_000 < model.count_params() < 180_000  # The issue: "a ~150k-parameter network".
    for height, width in ((33, 33), (40, 56)):
        logits = model(tf.zeros([2, height, width, 3]), training=False)["logits"]
        assert logits.shape == (2, height, width, 9)


def _write_colour_dataset(directory, count=8, size=16):
    """Images whose one square is red (class 1) or blue (class 2) on grey; all in train.txt."""
    examples, ids = [], []
    for index in range(count):
        image = np.full((size, size, 3), 128, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        class_id = 1 + index % 2
        top = 2 + index % 5
        image[top:top + 8, 3:11] = (230, 20, 20) if class_id == 1 else (20, 20, 230)
        mask[top:top + 8, 3:11] = class_id
        name = f"img{index}"
        ids.append(name)
        examples.append(records.encode_example(image, name, mask=mask, class_labels=[class_id],
                                               image_format="png", num_classes=NUM_CLASSES))
    for split in ("train", "val"):
        records.write_records(examples, os.path.join(directory, split), num_shards=1)
    with open(os.path.join(directory, "train.txt"), "w") as f:
        f.write("".join(f"{name}\n" for name in ids))


def test_training_learns_a_colour_coded_set_and_reports_a_row(reference_cnn, tmp_path):
    _write_colour_dataset(str(tmp_path))
    row = reference_cnn.train_and_evaluate(str(tmp_path), "train.txt", NUM_CLASSES, crop=17,
                                           steps=60, batch_size=4, learning_rate=1e-2,
                                           log_every=0, model_kwargs=SMALL)
    assert row["labelled"] == 8 and row["steps"] == 60 and row["batch_size"] == 4
    assert row["miou"] > 0.6, row  # Chance is far below: two colours name the classes.
    assert set(row["per_class_iou"]) == {"0", "1", "2"}
    table = reference_cnn.format_table(str(tmp_path), [row])
    assert "| train.txt | 8 | 60 x 4 |" in table


def test_a_missing_split_file_is_named(reference_cnn, tmp_path):
    with pytest.raises(FileNotFoundError, match="labelled_1_16.txt"):
        reference_cnn.train_and_evaluate(str(tmp_path), "labelled_1_16.txt", NUM_CLASSES, 17)
