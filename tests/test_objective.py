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


def test_mix_with_partner_takes_the_next_image_inside_the_box():
    from wss.method.objective import mix_with_partner

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5, 2))
    keep = rng.integers(0, 2, (3, 4, 5, 1)).astype(np.float64)
    expected = keep * x + (1 - keep) * x[[1, 2, 0]]
    np.testing.assert_allclose(mix_with_partner(tf.constant(x), tf.constant(keep)).numpy(),
                               expected, rtol=1e-12)
    single = tf.constant(x[:1])  # Its own partner: unchanged.
    np.testing.assert_allclose(mix_with_partner(single, tf.constant(keep[:1])).numpy(), x[:1])


def test_cutmix_loss_u_is_the_soft_cross_entropy_of_the_mixed_batch():
    """L_u with a `mix_mask` against a float64 numpy reference on the mixed views and targets."""
    keras.utils.set_random_seed(0)
    model, head = _deeplab_pair(classifier_dropout_rate=0.0, aspp_dropout_rate=0.0)
    objective = PseudoSegObjective(model, head, mode="semi", use_sgc_loss=False,
                                   use_classification_loss=False)
    labelled, unlabelled = _batches(0)
    rng = np.random.default_rng(2)
    keep = np.ones((BATCH, SIZE, SIZE), np.float32)
    keep[0, 4:20, 8:30] = 0  # Image 0 takes a box of image 1, image 1 one of image 0.
    keep[1, 0:9, 0:13] = 0
    strong_valid = np.ones((BATCH, SIZE, SIZE), np.float32)
    strong_valid[1, 20:, 20:] = 0  # A CutOut square in image 1.
    unlabelled = dict(unlabelled, mix_mask=tf.constant(keep),
                      strong_valid=tf.constant(strong_valid))
    small = (SIZE - 1) // 4 + 1  # The decoder's stride-4 grid of a 4k + 1 crop.
    targets = rng.dirichlet(np.ones(NUM_CLASSES), (BATCH, small, small))
    weights = rng.uniform(size=(BATCH, small, small))
    pseudo = {"targets": tf.constant(targets, tf.float32),
              "pixel_weights": tf.constant(weights, tf.float32)}
    _, named, strong = objective.compute_losses(labelled, unlabelled, pseudo)

    strong_images = unlabelled["strong"].numpy()
    mixed = (keep[..., None] * strong_images
             + (1 - keep[..., None]) * strong_images[[1, 0]])
    logits = model(tf.constant(mixed, tf.float32), training=True)["logits"].numpy()
    np.testing.assert_allclose(strong["logits"].numpy(), logits, rtol=1e-4, atol=1e-4)
    keep_small = keep[:, ::4, ::4].astype(np.float64)  # Decoder position i is pixel 4i.
    mixed_targets = (keep_small[..., None] * targets
                     + (1 - keep_small[..., None]) * targets[[1, 0]])
    mixed_weights = keep_small * weights + (1 - keep_small) * weights[[1, 0]]
    valid = (keep * strong_valid + (1 - keep) * strong_valid[[1, 0]])[:, ::4, ::4]
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    cross_entropy = -(mixed_targets * log_probs).sum(-1)
    expected = (cross_entropy * valid * mixed_weights).sum() / valid.sum()
    np.testing.assert_allclose(float(named["loss_u"]), expected, rtol=1e-4)


def test_cutmix_in_weak_mode_fails_naming_the_binding():
    keras.utils.set_random_seed(0)
    model, head = _deeplab_pair()
    objective = PseudoSegObjective(model, head, mode="weak")
    labelled, unlabelled = _batches(0)
    unlabelled = dict(unlabelled, mix_mask=tf.ones([BATCH, SIZE, SIZE]))
    pseudo = {"targets": tf.zeros([BATCH, 9, 9, NUM_CLASSES]), "pixel_weights": None}
    with pytest.raises(ValueError, match="StrongViewConfig.cutmix_area"):
        objective.compute_losses(labelled, unlabelled, pseudo)


def test_offline_labels_at_the_image_resolution_train_the_upsampled_strong_logits():
    """`offline_label_resolution='image'`: L_u is L_s's cross-entropy on the strong view."""
    from wss.method import losses

    keras.utils.set_random_seed(0)
    model, head = _deeplab_pair(classifier_dropout_rate=0.0, aspp_dropout_rate=0.0)
    labelled, unlabelled = _batches(0)
    rng = np.random.default_rng(4)
    labels = rng.integers(0, NUM_CLASSES, (BATCH, SIZE, SIZE)).astype(np.int32)
    labels[1, :5] = 255
    strong_valid = np.ones((BATCH, SIZE, SIZE), np.float32)
    strong_valid[0, 3:11, 6:14] = 0  # A CutOut square.
    unlabelled = dict(unlabelled, label=tf.constant(labels),
                      strong_valid=tf.constant(strong_valid))
    results = {}
    for resolution in ("image", "decoder"):
        objective = PseudoSegObjective(model, head, mode="semi", use_sgc_loss=False,
                                       use_classification_loss=False, offline_labels=True,
                                       offline_label_resolution=resolution,
                                       unlabelled_weight=0.5)
        pseudo = objective.pseudo_label_pass(unlabelled)
        _, named, strong = objective.compute_losses(labelled, unlabelled, pseudo)
        results[resolution] = (named["loss_u"].numpy(), strong["logits"])
    loss, logits = results["image"]
    expected = losses.offline_unlabelled_loss(labels, logits, strong_valid, weight=0.5)
    np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-5)
    assert abs(results["decoder"][0] - loss) > 1e-4  # The default samples the labels.
    with pytest.raises(ValueError, match="PseudoSegObjective.offline_label_resolution"):
        PseudoSegObjective(model, head, mode="semi", offline_labels=True,
                           offline_label_resolution="full")


def test_offline_image_labels_train_the_strong_view_classifier_on_the_labels_classes():
    """`offline_image_labels=True`: L_x on the strong view, classes named in its valid pixels."""
    keras.utils.set_random_seed(0)
    model, head = _deeplab_pair(classifier_dropout_rate=0.0, aspp_dropout_rate=0.0)
    labelled, unlabelled = _batches(0)
    labels = np.zeros((BATCH, SIZE, SIZE), np.int32)
    labels[0, :4, :4] = 2
    labels[0, 10:, 10:] = 3
    labels[1, :5] = 255
    labels[1, 5:8, 5:8] = NUM_CLASSES - 1
    strong_valid = np.ones((BATCH, SIZE, SIZE), np.float32)
    strong_valid[0, 10:, 10:] = 0  # Class 3 is cut out of image 0's view.
    unlabelled = dict(unlabelled, label=tf.constant(labels),
                      strong_valid=tf.constant(strong_valid))
    objective = PseudoSegObjective(model, head, mode="semi", use_sgc_loss=False,
                                   offline_labels=True, offline_image_labels=True)
    pseudo = objective.pseudo_label_pass(unlabelled)
    total, named, strong = objective.compute_losses(labelled, unlabelled, pseudo)
    np.testing.assert_allclose(total.numpy(), sum(v.numpy() for v in named.values()), rtol=1e-5)
    hot = np.zeros((BATCH, NUM_CLASSES - 1))
    hot[0, 1] = 1
    hot[1, NUM_CLASSES - 2] = 1
    z = strong["cls_logits"].numpy().astype(np.float64)
    expected = np.mean(np.maximum(z, 0) - z * hot + np.log1p(np.exp(-np.abs(z))))
    np.testing.assert_allclose(named["loss_x_u"].numpy(), expected, rtol=1e-5)
    default = PseudoSegObjective(model, head, mode="semi", use_sgc_loss=False,
                                 offline_labels=True)
    assert "loss_x_u" not in default.compute_losses(labelled, unlabelled, pseudo)[1]
    with pytest.raises(ValueError, match="PseudoSegObjective.offline_image_labels"):
        PseudoSegObjective(model, head, mode="semi", offline_labels=True,
                           offline_image_labels="yes")
