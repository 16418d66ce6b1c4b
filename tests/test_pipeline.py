"""Tests of the tf.data streams: contract keys, splits, determinism, sharding, errors."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from wss.data import augment, pipeline, records, splits

C = 5
CROP = (24, 24)


def _write(tmp_path, n=8, num_shards=2, name="train"):
    rng = np.random.default_rng(0)
    examples = []
    for i in range(n):
        image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        mask = np.full((20, 30), (i % (C - 1)) + 1, np.uint8)
        mask[:5] = 0
        examples.append(records.encode_example(image, f"img{i}", mask=mask, image_format="png"))
    prefix = str(tmp_path / name)
    records.write_records(examples, prefix, num_shards)
    return prefix + "-*"


@pytest.fixture
def gin_clean():
    gin.clear_config()
    yield
    gin.clear_config()


def test_contract_keys_and_shapes(tmp_path):
    pattern = _write(tmp_path)
    lab = next(iter(pipeline.labelled_dataset(pattern, 4, C, crop_size=CROP, seed=0)))
    unl = next(iter(pipeline.unlabelled_dataset(pattern, 4, C, crop_size=CROP, seed=0)))
    assert set(lab) == set(pipeline.batch_keys("labelled"))
    assert set(unl) == set(pipeline.batch_keys("unlabelled"))
    expected = {
        "image": ([4, 24, 24, 3], tf.float32), "label": ([4, 24, 24], tf.int32),
        "valid": ([4, 24, 24], tf.float32), "strong": ([4, 24, 24, 3], tf.float32),
        "strong_valid": ([4, 24, 24], tf.float32), "class_labels": ([4, C - 1], tf.float32),
        "has_mask": ([4], tf.bool), "filename": ([4], tf.string),
    }
    ds = pipeline.unlabelled_dataset(pattern, 4, C, crop_size=CROP)
    for key, (shape, dtype) in expected.items():
        assert ds.element_spec[key].shape.as_list() == shape, key
        assert ds.element_spec[key].dtype == dtype, key
    assert unl["has_mask"].numpy().all()
    # Class labels come from the cropped mask: the foreground class of each image or nothing.
    for name, labels, label in zip(unl["filename"].numpy(), unl["class_labels"].numpy(),
                                   unl["label"].numpy()):
        present = set(np.unique(label)) - {0, 255}
        assert set(np.nonzero(labels)[0] + 1) == present, name


def test_deterministic_with_seed(tmp_path, gin_clean):
    pattern = _write(tmp_path)
    gin.bind_parameter("StrongViewConfig.cutout_size", 8)

    def take(seed):
        ds = pipeline.unlabelled_dataset(pattern, 2, C, crop_size=CROP, seed=seed)
        return [b for b in ds.take(3)]

    a, b, c = take(7), take(7), take(8)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k].numpy(), y[k].numpy())
    for key in ("image", "strong"):
        assert any(not np.array_equal(x[key].numpy(), y[key].numpy()) for x, y in zip(a, c))


def test_strong_equals_weak_without_jitter_and_cutout(tmp_path, gin_clean):
    pattern = _write(tmp_path)
    gin.bind_parameter("StrongViewConfig.strength", 0.0)
    gin.bind_parameter("StrongViewConfig.cutout_size", 0)
    batch = next(iter(pipeline.unlabelled_dataset(pattern, 4, C, crop_size=CROP, seed=1)))
    np.testing.assert_array_equal(batch["strong"].numpy(), batch["image"].numpy())
    np.testing.assert_array_equal(batch["strong_valid"].numpy(), batch["valid"].numpy())


def test_strong_view_config_is_handed_to_the_stream(tmp_path, gin_clean):
    """An explicit `StrongViewConfig` and the same settings bound in gin give the same stream."""
    pattern = _write(tmp_path)
    config = augment.StrongViewConfig(cutout_size=8, strength=0.5)
    given = next(iter(pipeline.unlabelled_dataset(pattern, 2, C, crop_size=CROP, seed=3,
                                                   strong_view=config)))
    gin.bind_parameter("StrongViewConfig.cutout_size", 8)
    gin.bind_parameter("StrongViewConfig.strength", 0.5)
    bound = next(iter(pipeline.unlabelled_dataset(pattern, 2, C, crop_size=CROP, seed=3)))
    for key in ("strong", "strong_valid"):
        np.testing.assert_array_equal(given[key].numpy(), bound[key].numpy())
    assert given["strong_valid"].numpy().sum() < given["valid"].numpy().sum()  # CutOut on.
    with pytest.raises(TypeError, match="unlabelled_dataset.strong_view"):
        pipeline.unlabelled_dataset(pattern, 2, C, crop_size=CROP, strong_view={"strength": 0})


def test_cutmix_box_is_in_the_stream_only_when_enabled(tmp_path, gin_clean):
    pattern = _write(tmp_path)
    plain = next(iter(pipeline.unlabelled_dataset(pattern, 2, C, crop_size=CROP, seed=3)))
    assert "mix_mask" not in plain
    gin.bind_parameter("StrongViewConfig.cutmix_area", 0.5)
    mixed = next(iter(pipeline.unlabelled_dataset(pattern, 2, C, crop_size=CROP, seed=3)))
    assert mixed["mix_mask"].shape == (2,) + tuple(CROP)
    for key in ("image", "strong", "strong_valid"):  # The box draws nothing else.
        np.testing.assert_array_equal(plain[key].numpy(), mixed[key].numpy())


def test_split_and_exclude_files(tmp_path):
    pattern = _write(tmp_path)
    split = str(tmp_path / "labelled.txt")
    splits.write_split_file(["img1", "img3"], split)
    ds = pipeline.eval_dataset(pipeline.DatasetSpec(pattern, split_file=split), C)
    assert sorted(b["filename"].numpy()[0].decode() for b in ds) == ["img1", "img3"]
    ds = pipeline.eval_dataset(pipeline.DatasetSpec(pattern, exclude_file=split), C)
    names = sorted(b["filename"].numpy()[0].decode() for b in ds)
    assert names == ["img0", "img2", "img4", "img5", "img6", "img7"]
    batch = next(iter(pipeline.labelled_dataset(
        pipeline.dataset_spec(pattern, split_file=split), 4, C, crop_size=CROP)))
    assert set(batch["filename"].numpy()) <= {b"img1", b"img3"}


def test_split_errors(tmp_path):
    pattern = _write(tmp_path)
    split = str(tmp_path / "bad.txt")
    splits.write_split_file(["img1", "nope_42"], split)
    with pytest.raises(ValueError, match="bad.txt.*nope_42"):
        pipeline.labelled_dataset(pipeline.DatasetSpec(pattern, split), 2, C)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        pipeline.eval_dataset(pipeline.DatasetSpec(pattern, str(empty)), C)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        pipeline.eval_dataset(pipeline.DatasetSpec(pattern, str(tmp_path / "missing.txt")), C)
    with pytest.raises(FileNotFoundError, match="nothing"):
        pipeline.eval_dataset(str(tmp_path / "nothing-*"), C)


def test_image_labels_and_unlabelled_records(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    examples = [
        records.encode_example(image, "weak0", class_labels=[2, 4]),
        records.encode_example(image, "none0"),
    ]
    records.write_records(examples, str(tmp_path / "u"))
    ds = pipeline.unlabelled_dataset(str(tmp_path / "u-*"), 2, C, crop_size=CROP, seed=0)
    batch = next(iter(ds))
    got = dict(zip(batch["filename"].numpy(), batch["class_labels"].numpy()))
    np.testing.assert_array_equal(got[b"weak0"], [0, 1, 0, 1])
    np.testing.assert_array_equal(got[b"none0"], [0, 0, 0, 0])
    assert not batch["has_mask"].numpy().any()
    assert (batch["label"].numpy() == 255).all()
    # The labelled stream refuses records without a mask, naming them.
    with pytest.raises(tf.errors.InvalidArgumentError, match="(weak0|none0).*no segmentation"):
        next(iter(pipeline.labelled_dataset(str(tmp_path / "u-*"), 2, C, crop_size=CROP)))


def test_bad_mask_value_fails_with_filename(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[3, 3] = 9
    records.write_records(
        [records.encode_example(np.zeros((20, 30, 3), np.uint8), "badmask", mask=mask)],
        str(tmp_path / "b"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="badmask.*9"):
        next(iter(pipeline.labelled_dataset(str(tmp_path / "b-*"), 1, C, crop_size=CROP)))


def test_corrupt_file_is_named_by_checked_iterator(tmp_path):
    pattern = _write(tmp_path, n=4, num_shards=2)
    path = records.list_files(pattern)[1]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-100])
    ds = pipeline.labelled_dataset(pattern, 2, C, crop_size=CROP, seed=0, check_ids=False)
    it = pipeline.checked_iterator(ds, [pattern], C)
    with pytest.raises(records.RecordError, match="train-00001-of-00002.tfrecord: record"):
        for _ in range(10):
            next(it)


def test_eval_dataset_sizes(tmp_path):
    pattern = _write(tmp_path, n=3, num_shards=1)
    batches = list(pipeline.eval_dataset(pattern, C))
    assert len(batches) == 3
    assert batches[0]["image"].shape == (1, 20, 30, 3)
    assert batches[0]["valid"].numpy().all()
    padded = list(pipeline.eval_dataset(pattern, C, batch_size=2, crop_size=(32, 32)))
    assert [b["image"].shape[0] for b in padded] == [2, 1]
    assert padded[0]["valid"].numpy().sum() == 2 * 20 * 30
    assert (padded[0]["label"].numpy()[:, 20:] == 255).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="img0.*exceeds the eval crop"):
        list(pipeline.eval_dataset(pattern, C, crop_size=(16, 16)))


def test_input_context_sharding(tmp_path):
    pattern = _write(tmp_path, n=8, num_shards=2)
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        ds = pipeline.eval_dataset(pattern, C, batch_size=2, input_context=ctx)
        names = [n.decode() for b in ds for n in b["filename"].numpy()]
        assert all(b["image"].shape[0] == 1 for b in ds)  # 2 global -> 1 per replica
        seen.append(set(names))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 8
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    ds = pipeline.labelled_dataset(pattern, 4, C, crop_size=CROP, input_context=ctx)
    assert ds.element_spec["image"].shape[0] == 2


def test_split_examples_in_one_file_are_shared_by_all_pipelines(tmp_path):
    # A labelled list whose examples all sit in one shard: with file sharding, pipeline 1
    # would get none of them and its repeated stream would end at once.
    pattern = _write(tmp_path, n=8, num_shards=2)
    first_shard = sorted(tf.io.gfile.glob(pattern))[0]
    ids = [records.parse_example(r, C)["filename"].numpy().decode()
           for r in tf.data.TFRecordDataset(first_shard)]
    split = tmp_path / "labelled.txt"
    split.write_text("\n".join(ids[:4]) + "\n")
    spec = pipeline.DatasetSpec(pattern, str(split))
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        names = [records.parse_example(r, C)["filename"].numpy().decode()
                 for r in pipeline.read_records(spec, ctx)]
        assert len(names) == 2
        seen.append(set(names))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(ids[:4])
    split.write_text(ids[0] + "\n")
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    with pytest.raises(ValueError, match="labelled.txt lists 1 example"):
        pipeline.read_records(spec, ctx)


def test_make_distributed(tmp_path):
    pattern = _write(tmp_path, n=4, num_shards=1)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dist = pipeline.make_distributed(strategy, pipeline.labelled_dataset, spec=pattern,
                                     batch_size=2, num_classes=C, crop_size=CROP, seed=0)
    batch = next(iter(dist))
    assert batch["image"].shape == (2, 24, 24, 3)


def test_single_cpu_replica_reads_its_stream_undistributed(tmp_path):
    pattern = _write(tmp_path, n=4, num_shards=1)
    kwargs = dict(spec=pattern, batch_size=2, num_classes=C, crop_size=CROP, seed=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    plain = pipeline.make_distributed(strategy, pipeline.unlabelled_dataset, **kwargs)
    # No multi-device iterator, and no autotuning thread, whose wake-up the destruction of an
    # iterator waits for (up to a minute per stream at the end of a run).
    assert isinstance(plain, tf.data.Dataset)
    assert plain.options().autotune.enabled is False
    assert plain.options().deterministic  # The stream's own options are kept.
    distributed = strategy.distribute_datasets_from_function(
        lambda context: pipeline.unlabelled_dataset(input_context=context, **kwargs))
    # The same stream, batch for batch, as the strategy would have given its replica.
    theirs_iterator = iter(distributed)
    for ours in plain.take(3):
        theirs = next(theirs_iterator)
        for key in ("image", "strong", "filename"):
            np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())


def test_make_distributed_two_replicas(tmp_path):
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("needs the two logical CPUs of conftest.py")
    pattern = _write(tmp_path, n=8, num_shards=2)
    strategy = tf.distribute.MirroredStrategy([d.name for d in cpus[:2]])
    dist = pipeline.make_distributed(strategy, pipeline.unlabelled_dataset, spec=pattern,
                                     batch_size=4, num_classes=C, crop_size=CROP, seed=0)
    assert not isinstance(dist, tf.data.Dataset)
    batch = next(pipeline.checked_iterator(dist, [pattern], C))
    parts = strategy.experimental_local_results(batch["filename"])
    assert len(parts) == 2 and all(p.shape == (2,) for p in parts)
    # One worker: one input pipeline whose consecutive batches go to the two replicas.
    names = [set(p.numpy()) for p in parts]
    assert not names[0] & names[1]
