"""Gin at the edges (issue 14): config objects, the objective's use of them, renamed bindings.

The math functions (`make_pseudo_labels`, `strong_view`, `unlabelled_loss`,
`weight_decay_loss`) take plain arguments; their knobs are the fields of `PseudoLabelConfig` /
`StrongViewConfig` or `PseudoSegObjective` arguments. Bindings of the old names still parse
(with a warning) through `wss.config.LEGACY_BINDINGS`.
"""

import dataclasses
import logging
import re

import gin
import numpy as np
import pytest
import tensorflow as tf

from wss import config as config_lib
from wss import experiment
from wss.data import augment
from wss.data.augment import StrongViewConfig
from wss.method import losses, pseudo_labels, sgc
from wss.method.objective import PseudoSegObjective
from wss.method.pseudo_labels import PseudoLabelConfig
from wss.training import loop

NUM_CLASSES = 5
SIZE = 33


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _logits(seed, shape=(2, 5, 6, NUM_CLASSES)):
    rng = np.random.default_rng(seed)
    return (rng.normal(scale=2.0, size=shape).astype(np.float32),
            rng.normal(scale=2.0, size=shape).astype(np.float32))


# Config objects.

def test_math_functions_are_not_gin_configurables():
    for name in ("make_pseudo_labels", "strong_view", "unlabelled_loss", "weight_decay_loss"):
        with pytest.raises(ValueError, match=f"No configurable matching '{name}'"):
            gin.parse_config(f"{name}.weight = 1.0")


def test_pseudo_label_config_defaults_are_the_previous_ones():
    assert dataclasses.asdict(PseudoLabelConfig()) == {
        "source": "fusion", "normalize": True, "gamma": 0.5, "temperature": 0.5, "soft": True,
        "threshold": 0.0, "restrict_to_image_labels": False, "keep_per_class": 1.0,
        "align_distribution": False}
    with pytest.raises(dataclasses.FrozenInstanceError):
        PseudoLabelConfig().gamma = 0.3


@pytest.mark.parametrize("field,value", [
    ("source", "average"), ("normalize", 1), ("gamma", 1.5), ("gamma", -0.1),
    ("temperature", 0.0), ("temperature", -1.0), ("soft", "yes"), ("threshold", 1.5),
    ("threshold", -0.5), ("restrict_to_image_labels", "no"), ("keep_per_class", 0.0),
    ("keep_per_class", 1.5), ("align_distribution", 1),
])
def test_pseudo_label_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^PseudoLabelConfig\.{field}="):
        PseudoLabelConfig(**{field: value})


def test_make_pseudo_labels_takes_a_config_and_keyword_overrides():
    decoder, sgc_logits = _logits(seed=1)
    config = PseudoLabelConfig(source="decoder", temperature=1.0)
    targets, _ = pseudo_labels.make_pseudo_labels(decoder, sgc_logits, config)
    np.testing.assert_allclose(targets.numpy(), np_softmax(decoder), rtol=1e-5, atol=1e-6)
    sharpened, _ = pseudo_labels.make_pseudo_labels(decoder, sgc_logits, config, temperature=0.5)
    np.testing.assert_allclose(sharpened.numpy(), pseudo_labels.sharpen(np_softmax(decoder), 0.5),
                               rtol=1e-5, atol=1e-6)
    fused, _ = pseudo_labels.make_pseudo_labels(decoder, sgc_logits)
    default, _ = pseudo_labels.make_pseudo_labels(decoder, sgc_logits, PseudoLabelConfig())
    np.testing.assert_array_equal(fused.numpy(), default.numpy())
    with pytest.raises(ValueError, match="^PseudoLabelConfig.temperature=0"):
        pseudo_labels.make_pseudo_labels(decoder, sgc_logits, config, temperature=0)
    with pytest.raises(TypeError, match="expected a PseudoLabelConfig"):
        pseudo_labels.make_pseudo_labels(decoder, sgc_logits, "decoder")


def test_strong_view_config_defaults_and_validation():
    assert dataclasses.asdict(StrongViewConfig()) == {
        "strength": 1.0, "brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.25,
        "jitter_prob": 1.0, "cutout_size": 100, "cutout_fill": 127.5, "mean_pixel": 127.5,
        "jit_compile": True, "cutout_fraction": 0.0, "cutmix_area": 0.0}
    for field, value in [("strength", -1.0), ("hue", -0.1), ("jitter_prob", 1.5),
                         ("cutout_size", -1), ("cutout_size", 8.5), ("cutout_fill", "grey"),
                         ("jit_compile", 1), ("cutout_fraction", 2.0), ("cutmix_area", 1.0)]:
        with pytest.raises(ValueError, match=rf"^StrongViewConfig\.{field}="):
            StrongViewConfig(**{field: value})


def test_strong_view_takes_a_config_and_keyword_overrides():
    rng = np.random.default_rng(2)
    image = tf.constant(rng.uniform(0, 255, (SIZE, SIZE, 3)), tf.float32)
    valid = tf.ones((SIZE, SIZE), tf.float32)
    seed = tf.constant([3, 4], tf.int64)
    off = StrongViewConfig(strength=0.0, cutout_size=0)
    out = augment.strong_view(image, valid, seed, off)
    np.testing.assert_array_equal(out["strong"].numpy(), image.numpy())
    config = StrongViewConfig(cutout_size=9, jit_compile=False)
    given = augment.strong_view(image, valid, seed, config)
    overridden = augment.strong_view(image, valid, seed, off, strength=1.0, cutout_size=9,
                                     jit_compile=False)
    for key in ("strong", "strong_valid"):
        np.testing.assert_array_equal(given[key].numpy(), overridden[key].numpy())
    assert given["strong_valid"].numpy().sum() == SIZE * SIZE - 81


# The objective.

@pytest.fixture(scope="module")
def model_and_head():
    from wss.models import build_deeplab

    model = build_deeplab(num_classes=NUM_CLASSES, width_multiplier=0.0625, middle_flow_units=1)
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=8)
    return model, head


def _batches(seed=0, batch=2):
    rng = np.random.default_rng(seed)

    def images():
        return tf.constant(rng.uniform(0, 255, (batch, SIZE, SIZE, 3)), tf.float32)

    valid = np.ones((batch, SIZE, SIZE), np.float32)
    valid[1, 25:] = 0.0
    strong_valid = valid.copy()
    strong_valid[0, :8, :8] = 0.0
    class_labels = tf.constant(rng.integers(0, 2, (batch, NUM_CLASSES - 1)), tf.float32)
    labelled = {"image": images(), "valid": tf.constant(valid), "class_labels": class_labels,
                "label": tf.constant(rng.integers(0, NUM_CLASSES, (batch, SIZE, SIZE)),
                                     tf.int32)}
    unlabelled = {"image": images(), "valid": tf.constant(valid), "class_labels": class_labels,
                  "strong": images(), "strong_valid": tf.constant(strong_valid)}
    return labelled, unlabelled


def test_objective_uses_the_pseudo_label_config_it_was_given(model_and_head):
    model, head = model_and_head
    _, unlabelled = _batches()
    decoder_only = PseudoSegObjective(
        model, head, pseudo_labels=PseudoLabelConfig(source="decoder", temperature=1.0))
    pseudo = decoder_only.pseudo_label_pass(unlabelled)
    expected = np_softmax(pseudo["decoder_logits"].numpy())
    np.testing.assert_allclose(pseudo["targets"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pseudo["distribution"].numpy(), expected, rtol=1e-5, atol=1e-6)
    # The default (fusion, T 0.5) is something else on the same network and batch.
    fused = PseudoSegObjective(model, head).pseudo_label_pass(unlabelled)
    assert PseudoSegObjective(model, head).pseudo_labels == PseudoLabelConfig()
    assert not np.allclose(fused["targets"].numpy(), expected, atol=1e-3)
    # Without a config, the objective builds one from gin's bindings.
    gin.parse_config("PseudoLabelConfig.source = 'sgc'")
    assert PseudoSegObjective(model, head).pseudo_labels.source == "sgc"
    with pytest.raises(TypeError, match="PseudoSegObjective.pseudo_labels"):
        PseudoSegObjective(model, head, pseudo_labels={"source": "decoder"})


def test_ground_truth_source_trains_the_strong_view_on_the_unlabelled_masks(model_and_head):
    model, head = model_and_head
    _, unlabelled = _batches(seed=1)
    masks = np.random.default_rng(1).integers(0, NUM_CLASSES, (2, SIZE, SIZE)).astype(np.int32)
    masks[0] = 255  # An image without a mask contributes nothing.
    unlabelled["label"] = tf.constant(masks)
    objective = PseudoSegObjective(model, head,
                                   pseudo_labels=PseudoLabelConfig(source="ground_truth"))
    pseudo = objective.pseudo_label_pass(unlabelled)
    size = pseudo["targets"].shape[1:3]
    # One-hot at the decoder resolution, read on the logits' corner-aligned grid.
    rows = np.round(np.arange(size[0]) * (SIZE - 1) / (size[0] - 1)).astype(int)
    cols = np.round(np.arange(size[1]) * (SIZE - 1) / (size[1] - 1)).astype(int)
    expected = masks[:, rows][:, :, cols]
    np.testing.assert_array_equal(np.argmax(pseudo["targets"].numpy(), -1)[1], expected[1])
    np.testing.assert_array_equal(pseudo["pixel_weights"].numpy(),
                                  (expected != 255).astype(np.float32))


def test_objective_passes_its_loss_knobs(model_and_head, monkeypatch):
    model, head = model_and_head
    labelled, unlabelled = _batches(seed=1)
    calls = []
    unlabelled_loss = losses.unlabelled_loss

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return unlabelled_loss(*args, **kwargs)

    monkeypatch.setattr(losses, "unlabelled_loss", spy)
    base = PseudoSegObjective(model, head)
    pseudo = base.pseudo_label_pass(unlabelled)
    _, named, _ = base.compute_losses(labelled, unlabelled, pseudo)
    half = PseudoSegObjective(model, head, unlabelled_weight=0.5, mask_align_corners=False,
                              regularize_depthwise=True)
    _, halved, _ = half.compute_losses(labelled, unlabelled, pseudo)
    assert [(c["weight"], c["mask_align_corners"]) for c in calls] == [(1.0, True), (0.5, False)]
    variables = model.trainable_variables
    np.testing.assert_allclose(named["loss_wd"].numpy(),
                               losses.weight_decay_loss(variables, weight=4e-5).numpy())
    with_depthwise = losses.weight_decay_loss(variables, weight=4e-5, regularize_depthwise=True)
    np.testing.assert_allclose(halved["loss_wd"].numpy(), with_depthwise.numpy())
    assert with_depthwise.numpy() > named["loss_wd"].numpy()
    excluded = PseudoSegObjective(model, head, weight_decay_exclude=("entry_flow",))
    _, named_excluded, _ = excluded.compute_losses(labelled, unlabelled, pseudo)
    assert named_excluded["loss_wd"].numpy() < named["loss_wd"].numpy()
    with pytest.raises(ValueError, match="^PseudoSegObjective.unlabelled_weight=-1"):
        PseudoSegObjective(model, head, unlabelled_weight=-1.0)
    with pytest.raises(ValueError, match="^PseudoSegObjective.weight_decay_exclude="):
        PseudoSegObjective(model, head, weight_decay_exclude="sgc_head")


# Renamed bindings.

OLD_STYLE_BINDINGS = [
    "make_pseudo_labels.temperature = 0.1",
    "make_pseudo_labels.source = 'decoder'",
    "unlabelled_loss.weight = 0.5",
    "weight_decay_loss.exclude = ('sgc_head',)",
    "strong_view.cutout_fraction = 0.25",
]


def _check_new_values():
    assert PseudoLabelConfig() == PseudoLabelConfig(source="decoder", temperature=0.1)
    assert StrongViewConfig().cutout_fraction == 0.25
    assert gin.query_parameter("PseudoSegObjective.unlabelled_weight") == 0.5
    assert gin.query_parameter("PseudoSegObjective.weight_decay_exclude") == ("sgc_head",)


def test_old_style_bindings_parse_to_the_new_ones_with_a_warning(caplog):
    experiment.import_configurables()
    with caplog.at_level(logging.WARNING):
        config_lib.parse_gin(gin_bindings=OLD_STYLE_BINDINGS, finalize=False)
    _check_new_values()
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert ("make_pseudo_labels.temperature is deprecated and was read as "
            "PseudoLabelConfig.temperature") in messages
    assert "unlabelled_loss.weight is deprecated and was read as " \
           "PseudoSegObjective.unlabelled_weight" in messages


def test_old_style_saved_config_parses_to_the_new_values(tmp_path, caplog):
    """A `config.gin` as an older run saved it (`gin.config_str()`), read back to evaluate."""
    text = "\n".join([
        "# Parameters for make_pseudo_labels:",
        "# " + "=" * 78,
        *OLD_STYLE_BINDINGS[:2],
        "",
        "# Parameters for weight_decay_loss:",
        "weight_decay_loss.exclude = (",
        "    'sgc_head',",
        ")",
        *OLD_STYLE_BINDINGS[2:3], *OLD_STYLE_BINDINGS[4:],
        "unlabelled/strong_view.cutout_size = 8",
        "",
    ])
    (tmp_path / loop.CONFIG_FILENAME).write_text(text)
    with caplog.at_level(logging.WARNING):
        experiment.parse_experiment_config(str(tmp_path), finalize=False)
    _check_new_values()
    assert gin.query_parameter("unlabelled/StrongViewConfig.cutout_size") == 8
    with gin.config_scope("unlabelled"):
        assert StrongViewConfig().cutout_size == 8
    assert "unlabelled/strong_view.cutout_size is deprecated and was read as " \
           "unlabelled/StrongViewConfig.cutout_size" in caplog.text


def test_rename_keeps_scopes_comments_and_other_lines():
    text = ("# strong_view.cutout_size = 1 in a comment\n"
            "a/b/wss.data.augment.strong_view.cutout_size = 8\n"
            "train.num_steps = 5\n")
    assert config_lib.rename_legacy_bindings(text) == (
        "# strong_view.cutout_size = 1 in a comment\n"
        "a/b/StrongViewConfig.cutout_size = 8\n"
        "train.num_steps = 5\n")
    unrelated = "my_strong_view.cutout_size = 8\n"
    assert config_lib.rename_legacy_bindings(unrelated) == unrelated


@pytest.mark.parametrize("binding", [
    "weight_decay_loss.weight = 1.0",
    "make_pseudo_labels.return_distribution = True",
    "strong_view.seed = 3",
])
def test_old_binding_without_a_new_name_fails_naming_it(binding, tmp_path):
    experiment.import_configurables()
    old = binding.split(" =")[0]
    with pytest.raises(ValueError, match=rf"--gin_bindings='{re.escape(binding)}': binding "
                                         rf"{re.escape(old)}: .* is no longer gin-configurable"):
        config_lib.parse_gin(gin_bindings=[binding], finalize=False)
    path = tmp_path / "old.gin"
    path.write_text(binding + "\n")
    with pytest.raises(ValueError, match=rf"--gin_file={re.escape(str(path))}: binding "
                                         rf"{re.escape(old)}"):
        config_lib.parse_gin(gin_files=[str(path)], finalize=False)


@pytest.mark.parametrize("binding", [
    "PseudoLabelConfig.tempreature = 0.1",
    "StrongViewConfig.cutout = 8",
    "PseudoSegObjective.unlabeled_weight = 0.5",
])
def test_binding_to_a_knob_that_does_not_exist_fails_naming_it(binding):
    experiment.import_configurables()
    name, parameter = binding.split(" =")[0].split(".")
    with pytest.raises(ValueError,
                       match=rf"--gin_bindings='{re.escape(binding)}': .*{name}.*'{parameter}'"):
        config_lib.parse_gin(gin_bindings=[binding], finalize=False)


def test_old_name_in_an_included_file_gets_a_hint(tmp_path):
    experiment.import_configurables()
    (tmp_path / "old_base.gin").write_text("make_pseudo_labels.gamma = 0.3\n")
    (tmp_path / "new.gin").write_text(f"include '{tmp_path / 'old_base.gin'}'\n")
    with pytest.raises(ValueError, match="make_pseudo_labels is no longer gin-configurable; "
                                         "its bindings were renamed"):
        config_lib.parse_gin(gin_files=[str(tmp_path / "new.gin")], finalize=False)
