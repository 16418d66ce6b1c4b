"""Tests of the DeepLabv3+ models: endpoints, strides, parameter count, modes, dtypes."""

import math

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from wss.models import build_deeplab, build_image_classifier, default_atrous_rates
from wss.models.layers import BATCH_NORM_SUFFIXES, scale_dimension
from wss.resize import resize_bilinear

SMALL = dict(width_multiplier=1 / 16, middle_flow_units=2)
LOW_LEVEL = "entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise"

# Every variable element of DeepLab's own TF1 graph for Xception-65 DeepLabv3+ (21 classes)
# plus PseudoSeg's 20-way `xception_65/logits`, counted with tf.compat.v1 / tf-slim from
# DeepLab's code (docs/models.md); the analytic count below must reproduce it.
DEEPLAB_XCEPTION65_VOC_PARAMS_WITH_CLASSIFIER = 41_299_193


def _images(batch, height, width, seed=0):
    return tf.random.stateless_uniform([batch, height, width, 3], [seed, 1], 0.0, 255.0)


@pytest.fixture(scope="module")
def xception_os16():
    return build_deeplab("xception_65", num_classes=5, output_stride=16, **SMALL)


@pytest.fixture(scope="module")
def xception_os8():
    return build_deeplab("xception_65", num_classes=5, output_stride=8, **SMALL)


@pytest.fixture(scope="module")
def resnet_os16():
    return build_deeplab(
        "resnet_50_beta", num_classes=5, width_multiplier=1 / 16,
        resnet_units_per_block=(2, 2, 2),
    )


def _ceil(size, stride):
    return math.ceil(size / stride)


@pytest.mark.parametrize("height,width", [(33, 47), (32, 48)])
def test_xception_endpoint_shapes_os16(xception_os16, height, width):
    out = xception_os16(_images(2, height, width), training=False)
    features = out["features"]
    expected_strides = {
        "entry_flow/block1": (4, 8),
        "entry_flow/block2": (8, 16),
        LOW_LEVEL: (4, 16),
        "entry_flow/block3": (16, 46),
        "middle_flow/block1": (16, 46),
        "exit_flow/block1": (16, 64),
        "exit_flow/block2": (16, 128),
    }
    for name, (stride, depth) in expected_strides.items():
        assert features[name].shape == (2, _ceil(height, stride), _ceil(width, stride), depth), name
    assert features["low_level"] is features[LOW_LEVEL]
    assert features["penultimate"] is features["exit_flow/block1"]
    assert features["final"] is features["exit_flow/block2"]
    assert out["logits"].shape == (2, _ceil(height, 4), _ceil(width, 4), 5)
    assert out["logits"].dtype == tf.float32
    assert out["cls_logits"].shape == (2, 4)


@pytest.mark.parametrize("height,width", [(33, 47), (32, 48)])
def test_xception_endpoint_shapes_os8(xception_os8, height, width):
    features = xception_os8(_images(1, height, width), training=False)["features"]
    for name in ("entry_flow/block3", "middle_flow/block1", "exit_flow/block1", "final"):
        assert features[name].shape[1:3] == (_ceil(height, 8), _ceil(width, 8)), name
    assert features["low_level"].shape[1:3] == (_ceil(height, 4), _ceil(width, 4))


def test_atrous_schedule_follows_output_stride(xception_os16, xception_os8):
    def rates(model):
        return {
            unit.tf1_scope: [sep.depthwise.dilation_rate[0] for sep in unit.separable_convs]
            for unit in model.backbone.units
        }

    os16, os8 = rates(xception_os16), rates(xception_os8)
    assert os16["middle_flow/block1/unit_1"] == [1, 1, 1]
    assert os16["exit_flow/block2/unit_1"] == [2, 2, 2]
    assert os8["middle_flow/block1/unit_1"] == [2, 2, 2]
    assert os8["exit_flow/block2/unit_1"] == [4, 4, 4]
    # ASPP rates default to (6, 12, 18) at OS 16, doubled at OS 8.
    assert [layer.depthwise.dilation_rate[0] for layer in xception_os16.aspp_separable] == [
        6, 12, 18]
    assert [layer.depthwise.dilation_rate[0] for layer in xception_os8.aspp_separable] == [
        12, 24, 36]
    assert default_atrous_rates(32) == (3, 6, 9)


def test_multi_grid_sets_last_block_unit_rates():
    model = build_deeplab(num_classes=3, multi_grid=(1, 2, 4), build_input_size=17, **SMALL)
    last = model.backbone.units[-1]
    assert [sep.depthwise.dilation_rate[0] for sep in last.separable_convs] == [2, 4, 8]


def test_resnet_endpoints(resnet_os16):
    height, width = 65, 50
    out = resnet_os16(_images(1, height, width), training=False)
    features = out["features"]
    assert features["low_level"] is features["block1/unit_1/bottleneck_v1/conv3"]
    assert features["low_level"].shape[1:3] == (_ceil(height, 4), _ceil(width, 4))
    assert features["block1"].shape[1:3] == (_ceil(height, 8), _ceil(width, 8))
    for name in ("block2", "block3", "block4"):
        assert features[name].shape[1:3] == (_ceil(height, 16), _ceil(width, 16)), name
    assert features["penultimate"] is features["block3"]
    assert features["final"].shape[-1] == 128
    assert out["logits"].shape == (1, _ceil(height, 4), _ceil(width, 4), 5)
    names = dict((name, v) for v, name in resnet_os16.tf1_variable_table())
    assert "resnet_v1_50/conv1_3/BatchNorm/moving_variance" in names
    assert "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights" in names
    assert "resnet_v1_50/block1/unit_2/bottleneck_v1/shortcut/weights" not in names
    assert "resnet_v1_50/logits/biases" in names


def _separable(cin, cout):
    return 9 * cin + 4 * cin + cin * cout + 4 * cout


def _conv_bn(cin, cout, k=1):
    return k * k * cin * cout + 4 * cout


def analytic_xception65_deeplab_params(num_classes=21, with_classifier=True):
    """Counts DeepLabv3+ Xception-65 variables (BN moving statistics included) by hand."""
    total = _conv_bn(3, 32, 3) + _conv_bn(32, 64, 3)
    blocks = [((128, 128, 128), True, 1), ((256, 256, 256), True, 1), ((728,) * 3, True, 1),
              ((728,) * 3, False, 16), ((728, 1024, 1024), True, 1),
              ((1536, 1536, 2048), False, 1)]
    depth_in = 64
    for depths, conv_shortcut, units in blocks:
        for _ in range(units):
            cin = depth_in
            for d in depths:
                total += _separable(cin, d)
                cin = d
            if conv_shortcut:
                total += _conv_bn(depth_in, depths[-1])
            depth_in = depths[-1]
    total += _conv_bn(2048, 256) * 2 + _separable(2048, 256) * 3  # image pooling, ASPP
    total += _conv_bn(5 * 256, 256)  # concat_projection
    total += _conv_bn(256, 48) + _separable(256 + 48, 256) + _separable(256, 256)  # decoder
    total += 256 * num_classes + num_classes  # logits/semantic
    if with_classifier:
        total += 2048 * (num_classes - 1) + num_classes - 1
    return total


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables if "float" in str(v.dtype))


def test_full_xception65_parameter_count_matches_deeplab():
    assert analytic_xception65_deeplab_params() == DEEPLAB_XCEPTION65_VOC_PARAMS_WITH_CLASSIFIER
    model = build_deeplab("xception_65", num_classes=21, build_input_size=17)
    assert _count(model.variables) == DEEPLAB_XCEPTION65_VOC_PARAMS_WITH_CLASSIFIER
    batch_norm_statistics = sum(
        int(np.prod(v.shape)) for v in model.non_trainable_variables if "moving" in v.path)
    assert _count(model.trainable_variables) + batch_norm_statistics == _count(model.variables)
    assert model.classifier_kernel.shape == (2048, 20)
    assert len(model.tf1_variable_table()) == 734  # variables in DeepLab's TF1 graph


def test_classify_matches_cls_logits_and_kernel(xception_os16):
    out = xception_os16(_images(2, 33, 33, seed=3), training=False)
    final = out["features"]["final"]
    np.testing.assert_allclose(
        xception_os16.classify(final).numpy(), out["cls_logits"].numpy(), rtol=1e-5, atol=1e-6)
    pooled = tf.reduce_mean(final, axis=[1, 2])
    manual = pooled @ xception_os16.classifier_kernel + xception_os16.classifier.bias
    np.testing.assert_allclose(manual.numpy(), out["cls_logits"].numpy(), rtol=1e-5, atol=1e-5)
    assert xception_os16.num_classes == 5


def _conv_bn_paths(scope):
    return [f"{scope}/conv/kernel"] + [f"{scope}/BatchNorm/{s}" for s in BATCH_NORM_SUFFIXES]


def _separable_paths(scope):
    return ([f"{scope}/depthwise/kernel"]
            + [f"{scope}/depthwise_BatchNorm/{s}" for s in BATCH_NORM_SUFFIXES]
            + _conv_bn_paths(f"{scope}/pointwise"))


def test_head_variable_paths_and_order_are_pinned(xception_os16):
    # Project checkpoints key on variable paths (wss.experiment.VariableStore) and optimizer
    # slots follow the variable order: the head's parts (ASPP, decoder, classifier head) must
    # not add a level to the paths nor reorder them.
    head = [v.path for v in xception_os16.variables
            if "float" in str(v.dtype) and not v.path.startswith("deeplab/xception_65/")]
    expected = [*_conv_bn_paths("image_pooling"), *_conv_bn_paths("aspp0"),
                *(p for i in (1, 2, 3) for p in _separable_paths(f"aspp{i}")),
                *_conv_bn_paths("concat_projection"),
                *_conv_bn_paths("decoder_feature_projection0"),
                *_separable_paths("decoder_decoder_conv0"),
                *_separable_paths("decoder_decoder_conv1"),
                "logits_semantic/kernel", "logits_semantic/bias",
                "classifier/kernel", "classifier/bias"]
    assert head == [f"deeplab/{p}" for p in expected]
    classifier = build_image_classifier(num_logits=3, build_input_size=17, **SMALL)
    assert [v.path for v in classifier.trainable_variables][-2:] == [
        "classifier/classifier/kernel", "classifier/classifier/bias"]


def test_training_mode_updates_batch_norm_only_when_fine_tuning():
    model = build_deeplab(num_classes=3, build_input_size=17, **SMALL)
    frozen = build_deeplab(num_classes=3, build_input_size=17, fine_tune_batch_norm=False,
                           classifier_dropout_rate=0.0, aspp_dropout_rate=0.0, **SMALL)
    images = _images(2, 33, 33, seed=5)
    moving = model.backbone.conv1_1.bn.moving_mean
    before = moving.numpy().copy()
    model(images, training=True)
    assert not np.allclose(moving.numpy(), before)

    frozen_moving = frozen.backbone.conv1_1.bn.moving_mean.numpy().copy()
    train_out = frozen(images, training=True)
    np.testing.assert_array_equal(frozen.backbone.conv1_1.bn.moving_mean.numpy(), frozen_moving)
    # Without dropout and with frozen BatchNorm, training and inference agree.
    np.testing.assert_allclose(train_out["logits"].numpy(),
                               frozen(images, training=False)["logits"].numpy(), atol=1e-5)


def test_dropout_only_in_training(xception_os16):
    images = _images(2, 33, 33, seed=7)
    first = xception_os16(images, training=False)["logits"].numpy()
    np.testing.assert_array_equal(first, xception_os16(images, training=False)["logits"].numpy())
    assert xception_os16.classifier_dropout.rate == 0.5
    assert xception_os16.concat_projection_dropout.rate == pytest.approx(0.1)


def test_mixed_bfloat16_forward():
    model = build_deeplab(num_classes=4, build_input_size=17, dtype="mixed_bfloat16", **SMALL)
    out = model(_images(1, 33, 33), training=True)
    assert out["logits"].dtype == tf.float32
    assert out["cls_logits"].dtype == tf.float32
    assert out["features"]["final"].dtype == tf.bfloat16
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert np.isfinite(out["logits"].numpy()).all()
    with tf.GradientTape() as tape:
        out = model(_images(1, 33, 33), training=True)
        loss = tf.reduce_mean(out["logits"]) + tf.reduce_mean(out["cls_logits"])
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)


def test_weight_decay_variables_are_conv_kernels_only(xception_os16):
    decayed = {id(v) for v in xception_os16.weight_decay_variables}
    table = dict((name, v) for v, name in xception_os16.tf1_variable_table())
    assert id(table["xception_65/entry_flow/conv1_1/weights"]) in decayed
    assert id(table["aspp1_pointwise/weights"]) in decayed
    assert id(table["logits/semantic/weights"]) in decayed
    assert id(table["aspp1_depthwise/depthwise_weights"]) not in decayed
    assert id(table["logits/semantic/biases"]) not in decayed
    assert id(table["concat_projection/BatchNorm/gamma"]) not in decayed


@pytest.mark.parametrize("size", [1, 2, 32, 33, 64, 65, 513])
def test_scale_dimension_is_ceil(size):
    for stride in (4, 8, 16):
        assert scale_dimension(size, 1.0 / stride) == math.ceil(size / stride)
        assert int(scale_dimension(tf.constant(size), 1.0 / stride)) == math.ceil(size / stride)


def test_resize_bilinear_has_align_corners_semantics():
    image = np.random.RandomState(0).randn(1, 3, 4, 2).astype(np.float32)
    out = resize_bilinear(tf.constant(image), (5, 7)).numpy()
    # Corners map onto corners; a centre sample is the mean of its neighbours.
    np.testing.assert_allclose(out[0, 0, 0], image[0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(out[0, -1, -1], image[0, -1, -1], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1, 0], image[0, :2, 0].mean(axis=0), rtol=1e-5)
    broadcast = resize_bilinear(tf.ones([1, 1, 1, 3]) * 2.0, (4, 5))
    np.testing.assert_array_equal(broadcast.numpy(), np.full((1, 4, 5, 3), 2.0, np.float32))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_deeplab("vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        build_deeplab(output_stride=12, **SMALL)
    with pytest.raises(ValueError, match="decoder_output_stride"):
        build_deeplab(decoder_output_stride=2, **SMALL)


def test_build_deeplab_is_gin_configurable():
    gin.clear_config()
    try:
        gin.parse_config("build_deeplab.num_classes = 3\nbuild_deeplab.width_multiplier = 0.0625")
        model = build_deeplab(middle_flow_units=1, build_input_size=17)
    finally:
        gin.clear_config()
    assert model.num_classes == 3
    assert model.backbone.num_features == 128
    assert isinstance(model, keras.Model)


def test_batch_norm_overrides_apply_to_every_batch_norm_layer():
    model = build_deeplab(num_classes=3, width_multiplier=0.0625, middle_flow_units=1,
                          batch_norm_decay=0.9, synchronized_batch_norm=True)
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(layers) > 50
    assert {layer.momentum for layer in layers} == {0.9}
    assert all(layer.synchronized for layer in layers)
    default = build_deeplab(num_classes=3, width_multiplier=0.0625, middle_flow_units=1)
    momenta = {layer.momentum for layer in default._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9997}
    assert not any(layer.synchronized for layer in default._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("center,scale,epsilon", [(True, True, 1e-3), (True, False, 1e-5)])
def test_fused_batch_norm_matches_keras_batch_norm(center, scale, epsilon):
    from wss.models.layers import FusedBatchNormalization

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 5, 6, 7)) * 3 + 1, tf.float32)
    weights = tf.constant(rng.normal(size=(4, 5, 6, 7)), tf.float32)
    results = []
    for layer in (keras.layers.BatchNormalization(momentum=0.9, epsilon=epsilon, center=center,
                                                  scale=scale),
                  FusedBatchNormalization(momentum=0.9, epsilon=epsilon, center=center,
                                          scale=scale)):
        layer.build(x.shape)
        init = np.random.default_rng(1)
        for variable in layer.variables:
            value = init.normal(size=variable.shape).astype(np.float32)
            variable.assign(np.abs(value) + 0.5 if "variance" in variable.path else value)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        results.append([y, *grads, layer.moving_mean, layer.moving_variance,
                        layer(x, training=False)])
    for keras_value, fused_value in zip(*results):
        keras_value = np.asarray(keras_value)
        np.testing.assert_allclose(np.asarray(fused_value), keras_value, rtol=1e-4,
                                   atol=1e-4 * np.abs(keras_value).max())


def test_atrous_rates_past_the_feature_map_are_reported(caplog):
    from absl import logging as absl_logging

    caplog.set_level("WARNING")
    absl_logging.get_absl_handler()  # absl logs through the standard logging module here.
    model = build_deeplab(num_classes=3, width_multiplier=0.0625, middle_flow_units=1,
                          output_stride=16, atrous_rates=(6, 12, 18))
    # The 33 x 33 dummy batch that creates the variables (3 x 3 features) is not a crop the
    # model will see: building warns of nothing.
    assert "reach past" not in caplog.text
    model(tf.zeros([1, 65, 65, 3]))  # 5 x 5 features: every rate reaches past them.
    assert "ASPP atrous rates [6, 12, 18] reach past the 5x5 feature map" in caplog.text
    caplog.clear()
    model(tf.zeros([1, 321, 321, 3]))  # 21 x 21: only 18 is fine, none reaches past.
    assert "reach past" not in caplog.text


def test_export_does_not_warn_about_the_build_shape(caplog, tmp_path):
    from absl import logging as absl_logging

    from wss import export

    caplog.set_level("WARNING")
    absl_logging.get_absl_handler()
    model = build_deeplab(num_classes=3, width_multiplier=0.0625, middle_flow_units=1,
                          output_stride=16, atrous_rates=(6, 12, 18))
    # tf.saved_model.save retraces the layers at the dummy batch's 3 x 3 features.
    export.export_saved_model(model, str(tmp_path / "model"))
    assert "reach past" not in caplog.text
    assert model.aspp.warn_about_rates  # Back on for the crops after the export.
    model(tf.zeros([1, 65, 65, 3]))
    assert "reach past the 5x5 feature map" in caplog.text
