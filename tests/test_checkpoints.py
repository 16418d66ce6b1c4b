"""Tests of DeepLab TF1 checkpoint loading (`wss.models.checkpoints`)."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from wss.models import build_deeplab, deeplab_name_table, load_deeplab_checkpoint

SMALL = dict(width_multiplier=1 / 16, middle_flow_units=1, build_input_size=17)


def write_tf1_checkpoint(path, name_to_value):
    """Writes raw TF1 variables under the given names with a tf.compat.v1 Saver."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [
            tf.compat.v1.Variable(value, name=name, dtype=value.dtype)
            for name, value in name_to_value.items()
        ]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, path)


def random_values(table, seed=0):
    rng = np.random.RandomState(seed)
    values = {}
    for name, variable in table.items():
        shape = tuple(variable.shape)
        if name.endswith("moving_variance") or name.endswith("gamma"):
            values[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            values[name] = (rng.randn(*shape) * 0.2).astype(np.float32)
    return values


@pytest.fixture(scope="module")
def models():
    return [build_deeplab(num_classes=4, **SMALL) for _ in range(2)]


def test_name_table_covers_every_variable_with_deeplab_names(models):
    table = deeplab_name_table(models[0])
    float_variables = [v for v in models[0].variables if "float" in str(v.dtype)]
    assert len(table) == len(float_variables)
    for name in (
        "xception_65/entry_flow/conv1_1/weights",
        "xception_65/entry_flow/conv1_1/BatchNorm/moving_variance",
        "xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/"
        "depthwise_weights",
        "xception_65/entry_flow/block1/unit_1/xception_module/shortcut/BatchNorm/gamma",
        "xception_65/middle_flow/block1/unit_1/xception_module/separable_conv3_pointwise/weights",
        "xception_65/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/"
        "BatchNorm/beta",
        "xception_65/logits/weights",
        "xception_65/logits/biases",
        "image_pooling/weights",
        "aspp0/BatchNorm/moving_mean",
        "aspp1_depthwise/depthwise_weights",
        "aspp3_pointwise/weights",
        "concat_projection/weights",
        "decoder/feature_projection0/weights",
        "decoder/decoder_conv1_pointwise/BatchNorm/gamma",
        "logits/semantic/weights",
        "logits/semantic/biases",
    ):
        assert name in table, name
    assert "xception_65/middle_flow/block1/unit_1/xception_module/shortcut/weights" not in table
    assert table["logits/semantic/weights"].shape == (1, 1, 16, 4)


def test_tf1_checkpoint_loads_like_direct_assignment(models, tmp_path):
    direct, loaded = models
    table = deeplab_name_table(direct)
    values = random_values(table)
    extra = {
        "global_step": np.array(1234, np.int64),
        "xception_65/entry_flow/conv1_1/weights/Momentum": np.zeros((3, 3, 3, 2), np.float32),
        "some_other_head/weights": np.zeros((2, 2), np.float32),
    }
    prefix = write_tf1_checkpoint(str(tmp_path / "model.ckpt-30000"), {**values, **extra})

    for name, variable in table.items():
        variable.assign(values[name])
    report = load_deeplab_checkpoint(loaded, prefix)

    assert sorted(report.loaded) == sorted(table)
    assert report.missing == [] and report.skipped == []
    assert report.unused == ["some_other_head/weights"]
    assert sorted(report.ignored) == [
        "global_step", "xception_65/entry_flow/conv1_1/weights/Momentum"]
    assert f"loaded {len(table)}," in report.summary()

    images = tf.random.stateless_uniform([2, 33, 31, 3], [1, 2], 0.0, 255.0)
    expected = direct(images, training=False)
    actual = loaded(images, training=False)
    np.testing.assert_array_equal(actual["logits"].numpy(), expected["logits"].numpy())
    np.testing.assert_array_equal(actual["cls_logits"].numpy(), expected["cls_logits"].numpy())
    np.testing.assert_array_equal(
        actual["features"]["final"].numpy(), expected["features"]["final"].numpy())
    # Loading from the directory picks the latest checkpoint in it.
    assert load_deeplab_checkpoint(loaded, str(tmp_path)).path == prefix


def test_shape_mismatch_raises_or_skips(tmp_path):
    source = build_deeplab(num_classes=6, **SMALL)
    target = build_deeplab(num_classes=4, **SMALL)
    source_table = deeplab_name_table(source)
    values = random_values(source_table, seed=1)
    prefix = write_tf1_checkpoint(str(tmp_path / "imagenet.ckpt"), values)

    with pytest.raises(ValueError, match=r"'xception_65/logits/weights' \[1, 1, 128, 5\] -> model "
                       r"variable 'deeplab/classifier/kernel' \[1, 1, 128, 3\]"):
        load_deeplab_checkpoint(target, prefix)

    target_table = deeplab_name_table(target)
    kept = target_table["logits/semantic/weights"].numpy().copy()
    report = load_deeplab_checkpoint(target, prefix, skip_mismatch=True)
    assert sorted(name for name, _, _ in report.skipped) == [
        "logits/semantic/biases", "logits/semantic/weights",
        "xception_65/logits/biases", "xception_65/logits/weights"]
    assert ("logits/semantic/weights", (1, 1, 16, 4), (1, 1, 16, 6)) in report.skipped
    np.testing.assert_array_equal(target_table["logits/semantic/weights"].numpy(), kept)
    name = "xception_65/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/weights"
    np.testing.assert_array_equal(target_table[name].numpy(), values[name])
    assert "skipped 4" in report.summary()


def test_backbone_only_checkpoint_reports_missing_head(models, tmp_path):
    model = models[1]
    table = deeplab_name_table(model)
    backbone_only = {n: v for n, v in random_values(table, seed=2).items()
                     if n.startswith("xception_65/")}
    prefix = write_tf1_checkpoint(str(tmp_path / "backbone.ckpt"), backbone_only)
    aspp_before = table["aspp0/weights"].numpy().copy()
    report = load_deeplab_checkpoint(model, prefix)
    assert sorted(report.loaded) == sorted(backbone_only)
    assert "aspp0/weights" in report.missing and "logits/semantic/biases" in report.missing
    assert len(report.loaded) + len(report.missing) == len(table)
    np.testing.assert_array_equal(table["aspp0/weights"].numpy(), aspp_before)


def test_bad_path_names_the_file(models, tmp_path):
    with pytest.raises(ValueError, match="nothing_here"):
        load_deeplab_checkpoint(models[0], str(tmp_path / "nothing_here.ckpt"))
    with pytest.raises(ValueError, match="No checkpoint found"):
        load_deeplab_checkpoint(models[0], str(tmp_path))


def test_loader_is_gin_configurable(models, tmp_path):
    table = deeplab_name_table(models[0])
    prefix = write_tf1_checkpoint(str(tmp_path / "m.ckpt"), random_values(table, seed=3))
    gin.clear_config()
    try:
        gin.parse_config("load_deeplab_checkpoint.skip_mismatch = True")
        report = load_deeplab_checkpoint(models[0], prefix)
    finally:
        gin.clear_config()
    assert len(report.loaded) == len(table)


def test_skip_last_layer_excludes_logits_scope(models, tmp_path):
    model = models[1]
    table = deeplab_name_table(model)
    values = random_values(table, seed=4)
    prefix = write_tf1_checkpoint(str(tmp_path / "last.ckpt"), values)
    kept = table["logits/semantic/weights"].numpy().copy()
    report = load_deeplab_checkpoint(model, prefix, skip_last_layer=True)
    assert sorted(report.excluded) == ["logits/semantic/biases", "logits/semantic/weights"]
    assert report.unused == []
    np.testing.assert_array_equal(table["logits/semantic/weights"].numpy(), kept)
    # PseudoSeg's classifier lives under xception_65/logits and is restored.
    np.testing.assert_array_equal(table["xception_65/logits/weights"].numpy(),
                                  values["xception_65/logits/weights"])
    report = load_deeplab_checkpoint(model, prefix, skip_last_layer=True, last_layer_scopes=(
        "logits", "image_pooling", "aspp", "concat_projection", "decoder"))
    assert "aspp1_depthwise/depthwise_weights" in report.excluded
    assert "decoder/feature_projection0/weights" in report.excluded
    assert len(report.loaded) + len(report.excluded) == len(table)


def test_a_checkpoint_without_the_model_s_names_raises_instead_of_restoring_nothing(
        models, tmp_path):
    model = models[0]
    before = [variable.numpy().copy() for variable in model.variables]
    # An object-based (TF2) checkpoint, as a wss run writes, under ckpt-1.
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "run" / "ckpt"))
    with pytest.raises(ValueError, match=r"none of the model's DeepLab TF1 variable names.*"
                       r"object-based \(TF2\).*tf1/model\.ckpt"):
        load_deeplab_checkpoint(model, prefix)
    # Another network's TF1 names: the same error, without the TF2 hint.
    other = write_tf1_checkpoint(str(tmp_path / "other.ckpt"),
                                 {"resnet_v1_50/conv1/weights": np.zeros([3], np.float32)})
    with pytest.raises(ValueError, match=r"its names begin 'resnet_v1_50/conv1/weights'"):
        load_deeplab_checkpoint(model, other, skip_mismatch=True)
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_checkpoint_whose_every_shared_variable_has_another_shape_raises(tmp_path):
    source = build_deeplab(num_classes=4, width_multiplier=1 / 8, middle_flow_units=1,
                           build_input_size=17)
    target = build_deeplab(num_classes=4, **SMALL)
    target_table = deeplab_name_table(target)
    values = {name: value for name, value in random_values(deeplab_name_table(source)).items()
              if tuple(target_table[name].shape) != value.shape}
    prefix = write_tf1_checkpoint(str(tmp_path / "wide.ckpt"), values)
    with pytest.raises(ValueError, match=r"every variable it shares with the model has another "
                       r"shape.*another width or depth"):
        load_deeplab_checkpoint(target, prefix, skip_mismatch=True)
