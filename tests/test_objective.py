"""The replica step of `wss.method.objective.PseudoSegObjective` against supervised training.

Checked here: with the unlabelled loss weighted 0 and no dropout, a semi-mode step moves the
trainable weights exactly as a supervised step on the same labelled batch does. The weak and
strong passes over the unlabelled images may change BatchNorm's moving statistics, and nothing
else: no gradient, no batch statistic and no classifier output of theirs leaks into the labelled
loss. With weight 1 the steps differ, so the check can fail.

This is the probe behind the README's note on the `shapes` runs with `unlabelled_weight = 0`:
their lead over supervised comes from the dropout draws (three calls per step instead of one),
not from the unlabelled images.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_ema_teacher import NUM_CLASSES, SIZE, _deeplab_pair

from wss.method.objective import PseudoSegObjective
from wss.method.pseudo_labels import PseudoLabelConfig

BATCH = 2


def _batches(seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, NUM_CLASSES, (BATCH, SIZE, SIZE))
    class_labels = np.stack([[float(c in image) for c in range(1, NUM_CLASSES)]
                             for image in label])
    labelled = {"image": tf.constant(rng.uniform(0, 255, (BATCH, SIZE, SIZE, 3)), tf.float32),
                "label": tf.constant(label, tf.int32),
                "class_labels": tf.constant(class_labels, tf.float32),
                "valid": tf.ones([BATCH, SIZE, SIZE])}
    unlabelled = {"image": tf.constant(rng.uniform(0, 255, (BATCH, SIZE, SIZE, 3)), tf.float32),
                  "strong": tf.constant(rng.uniform(0, 255, (BATCH, SIZE, SIZE, 3)), tf.float32),
                  "valid": tf.ones([BATCH, SIZE, SIZE]),
                  "strong_valid": tf.ones([BATCH, SIZE, SIZE])}
    return labelled, unlabelled


def _train(mode, unlabelled_weight, steps=2):
    keras.utils.set_random_seed(0)
    model, head = _deeplab_pair(classifier_dropout_rate=0.0, aspp_dropout_rate=0.0)
    config = PseudoLabelConfig(source="fusion", temperature=0.5)
    objective = PseudoSegObjective(model, head, mode=mode, pseudo_labels=config,
                                   unlabelled_weight=unlabelled_weight, weight_decay=1e-4)
    optimizer = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    for step in range(steps):
        # A supervised objective never reads the unlabelled batch.
        named, _, _ = objective.train_step(optimizer, *_batches(step))
    return objective, named


def _trainable(objective):
    return {v.path: v.numpy() for v in objective.trainable_variables}


@pytest.fixture(scope="module")
def supervised():
    return _train("supervised", 1.0)


def test_semi_step_with_unlabelled_weight_zero_is_the_supervised_step(supervised):
    reference, reference_losses = supervised
    objective, named = _train("semi", 0.0)
    assert float(named["loss_u"]) == 0.0
    for key in ("loss_s", "loss_x", "loss_sa"):
        np.testing.assert_allclose(float(named[key]), float(reference_losses[key]), rtol=1e-5)
    expected = _trainable(reference)
    got = _trainable(objective)
    assert expected.keys() == got.keys()
    for path, value in expected.items():
        np.testing.assert_allclose(got[path], value, rtol=1e-4, atol=1e-6, err_msg=path)


def test_semi_step_with_unlabelled_weight_one_differs(supervised):
    reference, _ = supervised
    objective, named = _train("semi", 1.0)
    assert float(named["loss_u"]) > 0.0
    expected = _trainable(reference)
    got = _trainable(objective)
    moved = max(float(np.max(np.abs(got[path] - value))) for path, value in expected.items())
    assert moved > 1e-3


def test_decoder_resolution_sgc_head_is_built_and_trained_at_the_decoder_grid():
    import gin

    from wss import experiment

    gin.parse_config(["build_deeplab.width_multiplier = 0.0625",
                      "build_deeplab.middle_flow_units = 1",
                      "make_sgc_head.attention_dim = 8",
                      "make_sgc_head.resolution = 'decoder'"])
    keras.utils.set_random_seed(0)
    model, head = experiment.build_models(num_classes=NUM_CLASSES, image_size=(SIZE, SIZE))
    low_level_depth = model(tf.zeros([1, SIZE, SIZE, 3]))["features"]["low_level"].shape[-1]
    objective = PseudoSegObjective(model, head, mode="semi")
    labelled, unlabelled = _batches(0)
    pseudo = objective.pseudo_label_pass(unlabelled)
    # The pass resizes SGC's logits to the decoder's grid; the head itself must run there too.
    assert pseudo["sgc_logits"].shape == pseudo["decoder_logits"].shape
    head_logits = objective._sgc(model(unlabelled["image"], training=False),
                                 tf.ones([BATCH, NUM_CLASSES - 1]), unlabelled["valid"], False)
    assert head_logits.shape == pseudo["decoder_logits"].shape
    assert head.key.kernel.shape[2] > low_level_depth  # low-level + penultimate + final
    before = head.key.kernel.numpy()
    optimizer = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    named, _, _ = objective.train_step(optimizer, labelled, unlabelled)
    assert np.isfinite(float(named["loss_sa"])) and float(named["loss_sa"]) > 0.0
    assert np.max(np.abs(head.key.kernel.numpy() - before)) > 0.0
