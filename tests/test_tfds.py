"""TFDS datasets as streams, on TFDS's own mock data (`tfds.testing.mock_data`): no download."""

import math

import numpy as np
import pytest
import tensorflow as tf

from wss import experiment
from wss.data import hygiene, pipeline, records, tfds_source
from wss.training import trainer

tfds = pytest.importorskip("tensorflow_datasets")

S = 32
PET_LABELS = {1: 1, 2: 0, 3: 255}  # Oxford-IIIT Pet trimaps: pet, background, border.


def _pet_example(split, k):
    rng = np.random.default_rng(k + 100 * len(split))
    mask = np.full((S, S, 1), 2, np.uint8)
    mask[8:24, 8:24] = 1
    mask[7, 8:24] = 3
    return {"image": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
            "segmentation_mask": mask, "file_name": f"{split}_{k}.jpg"}


def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Mock `_as_dataset` of oxford_iiit_pet: 6 consistent 32 x 32 examples per split."""
    del self, decoders, read_config, shuffle_files
    split = str(split)
    return tf.data.Dataset.from_generator(
        lambda: (_pet_example(split, k) for k in range(6)),
        output_signature={"image": tf.TensorSpec([None, None, 3], tf.uint8),
                          "segmentation_mask": tf.TensorSpec([None, None, 1], tf.uint8),
                          "file_name": tf.TensorSpec([], tf.string)})


def _pets(split="train", **kwargs):
    kwargs.setdefault("id_key", "file_name")
    kwargs.setdefault("label_map", PET_LABELS)
    return tfds_source.tfds_dataset("oxford_iiit_pet", split=split, **kwargs)


def test_serialize_example_matches_protobuf():
    features = {records.IMAGE_FILENAME: tfds_source._bytes(tf.constant(b"a")),
                records.IMAGE_HEIGHT: tfds_source._int64(tf.constant(7))}
    serialized = tfds_source.serialize_example(features).numpy()
    example = tf.train.Example.FromString(serialized)
    assert example.features.feature[records.IMAGE_FILENAME].bytes_list.value == [b"a"]
    assert example.features.feature[records.IMAGE_HEIGHT].int64_list.value == [7]


def test_tfds_split_reads_as_the_project_schema():
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        batches = list(pipeline.eval_dataset(_pets(), num_classes=2))
        unlabelled = list(pipeline.read_records(_pets("test", mask_key=None)).take(1))
    assert len(batches) == 6
    first = batches[0]
    assert first["filename"].numpy()[0] == b"train_0.jpg"
    expected = _pet_example("train", 0)
    np.testing.assert_array_equal(first["image"][0].numpy(), expected["image"])
    label = first["label"][0].numpy()
    assert label[10, 10] == 1 and label[0, 0] == 0 and label[7, 10] == 255
    assert first["has_mask"].numpy()[0]
    parsed = records.parse_example(unlabelled[0], 2)
    assert not parsed["has_mask"].numpy()


def test_split_files_and_overlap_work_on_tfds_ids(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("train_1\ntrain_4\n")
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        kept = _pets().with_splits(str(keep))
        ids = [records.parse_example(s, 2)["id"].numpy() for s in pipeline.read_records(kept)]
        assert ids == [b"train_1", b"train_4"]
        counts = hygiene.check_splits(kept, _pets("test", mask_key=None), _pets("validation"))
        assert counts == {"labelled": 2, "unlabelled": 6, "eval": 6}
        with pytest.raises(ValueError, match="also in the unlabelled stream: train_1, train_4"):
            hygiene.check_splits(kept, _pets(mask_key=None))
        keep.write_text("train_1\nnope\n")
        with pytest.raises(ValueError, match=r"keep.txt are not in tfds:oxford_iiit_pet\[train\]"
                                             r": nope"):
            list(pipeline.read_records(kept))


def test_unmapped_mask_values_and_size_mismatch_name_the_example():
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        source = _pets(label_map={1: 1, 2: 0})
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"Example \W*train_0.jpg\W* of tfds:oxford_iiit_pet\[train\]: "
                                 r"mask values \[3\] are not in tfds_dataset.label_map"):
            list(pipeline.eval_dataset(source, num_classes=2))
    # TFDS's automatic mock draws image and mask sizes independently.
    with tfds.testing.mock_data(num_examples=2):
        source = _pets(id_key=None, unmapped_label=255)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"Record \W*oxford_iiit_pet-train.tfrecord-\S+: image size .* but "
                                 r"mask size"):
            list(pipeline.eval_dataset(source, num_classes=2))


def test_unknown_feature_and_unprepared_dataset_are_named(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        with pytest.raises(ValueError, match=r"tfds_dataset.mask_key='mask'.*has no such "
                                             r"feature.*segmentation_mask"):
            list(pipeline.read_records(_pets(mask_key="mask")))
    with pytest.raises(FileNotFoundError, match="is not prepared.*tfds build oxford_iiit_pet"):
        pipeline.read_records(_pets(data_dir=str(tmp_path)))


@pytest.mark.slow
def test_tfds_streams_train_and_evaluate(tmp_path):
    bindings = [
        "NUM_CLASSES = 2",
        "train.init_checkpoint = None",
        "train.labelled_pattern = @labelled/tfds_dataset()",
        "train.unlabelled_pattern = @unlabelled/tfds_dataset()",
        "evaluate_checkpoint.pattern = @val/tfds_dataset()",
        "evaluate_checkpoint.class_names = None",
        "labelled/tfds_dataset.split = 'train'",
        f"labelled/tfds_dataset.label_map = {PET_LABELS}",
        "unlabelled/tfds_dataset.split = 'test'",
        "unlabelled/tfds_dataset.mask_key = None",
        "val/tfds_dataset.split = 'validation'",
        f"val/tfds_dataset.label_map = {PET_LABELS}",
        "tfds_dataset.name = 'oxford_iiit_pet'",
        "tfds_dataset.id_key = 'file_name'",
        "train.num_steps = 2",
        "train.crop_size = (33, 33)",
        "train.labelled_batch_size = 2",
        "train.unlabelled_batch_size = 2",
        "train.log_every = 1",
        "train.image_summary_every = 0",
        "train.checkpoint_every = 2",
        "build_deeplab.width_multiplier = 0.0625",
        "build_deeplab.middle_flow_units = 1",
        "make_sgc_head.attention_dim = 8",
        "StrongViewConfig.cutout_size = 8",
        "make_strategy.devices = ['/cpu:0']",
    ]
    experiment.parse_experiment_config(gin_files=["base.gin"], gin_bindings=bindings,
                                       finalize=False)
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        result = trainer.train(str(tmp_path))
        summary = trainer.after_training(str(tmp_path))
    assert result["step"] == 2 and math.isfinite(result["loss_total"])
    assert 0.0 <= summary["miou"] <= 1.0
    assert summary["best"]["step"] == 2 and summary["last"]["step"] == 2
