"""benchmarks/clean_set.py: a random-colour set without clutter, written through a `Variant`."""

import json
import os

import numpy as np
import pytest
from script_loading import load_script

from wss.data import records


@pytest.fixture(scope="module")
def clean_set():
    return load_script("benchmarks/clean_set.py")


def test_scene_masks_name_textured_objects_and_nothing_else(clean_set):
    shapes, textures = ("disk", "square"), ("stripes", "checker")
    for seed in range(5):
        image, mask = clean_set.render_clean_scene(np.random.default_rng(seed), 32, 40, shapes,
                                                   textures)
        assert image.shape == (32, 40, 3) and image.dtype == np.uint8
        assert mask.shape == (32, 40)
        assert set(np.unique(mask)) <= set(range(len(shapes) * len(textures) + 1))
    again, _ = clean_set.render_clean_scene(np.random.default_rng(4), 32, 40, shapes, textures)
    np.testing.assert_array_equal(image, again)


def test_generate_writes_the_schema_and_splits_of_the_built_in_sets(clean_set, tmp_path):
    output = str(tmp_path / "clean")
    metadata = clean_set.main(["--output_dir", output, "--num_train", "64", "--num_val", "8",
                               "--shapes", "disk,star", "--textures", "stripes"])
    assert metadata["variant"] == "clean" and metadata["num_classes"] == 3
    assert metadata["class_names"] == ["background", "disk_stripes", "star_stripes"]
    with open(os.path.join(output, "metadata.json")) as f:
        assert json.load(f)["name"] == "synthetic_clean"
    with open(os.path.join(output, "labelled_1_16.txt")) as f:
        assert len(f.read().split()) == 4
    examples = records.read_examples(os.path.join(output, "val-*.tfrecord"), 3)
    assert len(examples) == 8
    for example in examples:
        assert set(np.unique(np.asarray(example["label"]))) <= {0, 1, 2}


def test_unknown_shapes_and_textures_are_named(clean_set):
    with pytest.raises(ValueError, match="--shapes.*'blob'"):
        clean_set.clean_variant(shapes=("disk", "blob"))
    with pytest.raises(ValueError, match="--textures.*'plaid'"):
        clean_set.clean_variant(textures=("plaid",))
