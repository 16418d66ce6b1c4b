"""Pretraining: losses and accuracy against numpy, the classification set, the stream, and the
round trip pretrain -> TF1-named checkpoint -> `train.init_checkpoint`."""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from wss import experiment
from wss.data import pipeline, records, synthetic, synthetic_classification
from wss.models import build_deeplab, build_image_classifier, save_tf1_checkpoint
from wss.tasks import pretraining
from wss.training import trainer


def _sigmoid_ce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def test_classification_losses_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)) * 3
    labels = (rng.random((5, 7)) < 0.3).astype(np.float64)
    labels[4] = 0  # An image without a label.
    sigmoid = pretraining.classification_losses(logits, labels, "sigmoid").numpy()
    np.testing.assert_allclose(sigmoid, _sigmoid_ce(logits, labels).mean(-1), rtol=1e-5)
    softmax = pretraining.classification_losses(logits, labels, "softmax").numpy()
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    targets = labels / np.maximum(labels.sum(-1, keepdims=True), 1)
    np.testing.assert_allclose(softmax, -(targets * log_probs).sum(-1), rtol=1e-5, atol=1e-6)
    assert softmax[4] == 0.0


def test_classification_counts_top1_and_r_precision():
    logits = np.array([[3.0, 1.0, 2.0, 0.0],
                       [0.0, 1.0, 2.0, 3.0],
                       [5.0, 4.0, 3.0, 2.0]])
    labels = np.array([[1, 0, 1, 0],   # both labels in the top 2: 2 hits
                       [1, 0, 0, 1],   # top 2 are indices 3, 2: 1 hit
                       [0, 0, 0, 0]],  # no label
                      np.float32)
    sigmoid = pretraining.classification_counts(logits, labels, "sigmoid")
    assert float(sigmoid["hits"]) == 3 and float(sigmoid["positives"]) == 4
    softmax = pretraining.classification_counts(logits, labels, "softmax")
    # Top-1 of image 0 is index 0 (a label), of image 1 index 3 (a label); image 2 has none.
    assert float(softmax["hits"]) == 2 and float(softmax["positives"]) == 2


def test_classification_set_covers_the_segmentation_classes(tmp_path):
    names = set(synthetic_classification.CATEGORY_NAMES)
    for variant in synthetic.VARIANTS.values():
        assert set(variant.class_names[1:]) <= names, variant.name
        assert len(names) > variant.num_classes
    metadata = synthetic_classification.generate(str(tmp_path / "c"), num_train=40, num_val=4,
                                                 height=32, width=32, num_shards=2)
    examples = records.read_examples(str(tmp_path / "c" / "train-*.tfrecord"),
                                     synthetic_classification.NUM_CLASSES)
    assert len(examples) == 40 and metadata["num_classes"] == 71
    assert all(not e["has_mask"] for e in examples)
    assert all(int(np.sum(e["class_labels"])) == 1 for e in examples)  # One category each.
    # Other seed, other images; and never a segmentation image.
    other = synthetic_classification.render_example(np.random.default_rng([1, 7349, 0, 0]))
    first = synthetic_classification.render_example(np.random.default_rng([0, 7349, 0, 0]))
    assert not np.array_equal(other[0], first[0])


def test_classification_stream_batches(tmp_path):
    synthetic_classification.generate(str(tmp_path / "c"), num_train=16, num_val=2, height=32,
                                      width=32, num_shards=1)
    dataset = pipeline.classification_dataset(
        str(tmp_path / "c" / "train-*.tfrecord"), batch_size=4, num_classes=71,
        crop_size=(33, 33), jitter_strength=1.0, seed=1)
    batch = next(iter(dataset))
    assert batch["image"].shape == (4, 33, 33, 3)
    assert batch["class_labels"].shape == (4, 70)
    image = batch["image"].numpy()
    assert image.min() >= 0 and image.max() <= 255
    # Padding (the 33rd row and column of a 32 px image at scale 1) is the mean pixel.
    padded = batch["valid"].numpy() == 0
    np.testing.assert_allclose(image[padded], 127.5)


def test_tf1_checkpoint_round_trip_into_deeplab(tmp_path):
    classifier = build_image_classifier(num_logits=12, width_multiplier=0.0625,
                                        middle_flow_units=1, output_stride=32)
    rng = np.random.default_rng(0)
    for variable in classifier.variables:
        if "float" in str(variable.dtype):
            variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    path = save_tf1_checkpoint(classifier, str(tmp_path / "tf1" / "model.ckpt"))
    names = dict(tf.train.list_variables(path))
    assert "xception_65/entry_flow/conv1_1/weights" in names
    assert "xception_65/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/"\
           "BatchNorm/moving_variance" in names
    assert names["xception_65/logits/weights"] == [1, 1, 128, 12]  # 2048 / 16 features
    assert tf.train.latest_checkpoint(str(tmp_path / "tf1")) == path

    from wss.models import load_deeplab_checkpoint

    model = build_deeplab(num_classes=5, width_multiplier=0.0625, middle_flow_units=1,
                          output_stride=8, atrous_rates=(1, 2, 3))
    report = load_deeplab_checkpoint(model, str(tmp_path / "tf1"), skip_mismatch=True)
    assert [name for name, _, _ in report.skipped] == ["xception_65/logits/weights",
                                                      "xception_65/logits/biases"]
    assert not report.unused
    for ours, theirs in zip(model.backbone.variables, classifier.backbone.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def _pretrain_bindings(data_dir, steps):
    return [
        f"pretrain.train_pattern = '{data_dir}/train-*.tfrecord'",
        f"pretrain.val_pattern = '{data_dir}/val-*.tfrecord'",
        f"pretrain.num_steps = {steps}",
        "pretrain.batch_size = 2",
        "pretrain.crop_size = (33, 33)",
        "pretrain.log_every = 1",
        "pretrain.checkpoint_every = 2",
        "pretrain.image_summary_every = 2",
        "build_image_classifier.width_multiplier = 0.0625",
        "build_image_classifier.middle_flow_units = 1",
        # One device: a process that runs two differently shaped MirroredStrategy trainings
        # on two devices can mix up their collective all-reduces (TF 2.21); the segmentation
        # run below uses both devices.
        "make_strategy.devices = ['/cpu:0']",
    ]


@pytest.mark.slow
def test_pretrain_resumes_and_warm_starts_segmentation(tmp_path):
    data_dir = str(tmp_path / "cls")
    synthetic_classification.generate(data_dir, num_train=16, num_val=4, height=32, width=32,
                                      num_shards=2)
    logdir = str(tmp_path / "pretrain")
    experiment.parse_experiment_config(
        gin_files=["pretrain_demo.gin"],
        gin_bindings=_pretrain_bindings(data_dir, 3) + ["pretrain.steps_per_run = 2"],
        finalize=False)
    stopped = pretraining.pretrain(logdir)
    assert stopped["step"] == 2 and not stopped["finished"]
    assert not os.path.exists(pretraining.tf1_checkpoint_path(logdir) + ".index")
    gin.clear_config()
    experiment.parse_experiment_config(
        gin_files=["pretrain_demo.gin"], gin_bindings=_pretrain_bindings(data_dir, 3),
        finalize=False)
    result = pretraining.pretrain(logdir)
    assert result["step"] == 3 and result["finished"] and 0 <= result["val_accuracy"] <= 1
    assert np.isfinite(result["loss_cls"])
    with open(os.path.join(logdir, "train_result.json")) as f:
        assert json.load(f)["step"] == 3
    tf1_path = result["tf1_checkpoint"]
    pretrained = tf.train.load_checkpoint(tf1_path)

    # Segmentation starts from it: after warm start (before any step) the backbone is the
    # pretrained one. One step at learning rate 0 keeps it so.
    gin.clear_config()
    seg_dir = str(tmp_path / "seg_data")
    synthetic.generate(seg_dir, seed=3, num_train=64, num_val=4, height=32, width=32)
    experiment.parse_experiment_config(gin_files=["demo_supervised.gin"], gin_bindings=[
        f"DATA_DIR = '{seg_dir}'", f"train.init_checkpoint = '{tf1_path}'",
        "train.num_steps = 1", "train.crop_size = (33, 33)", "train.labelled_batch_size = 2",
        "build_deeplab.width_multiplier = 0.0625", "build_deeplab.middle_flow_units = 1",
        "make_sgc_head.attention_dim = 8", "make_optimizer.base_learning_rate = 0.0",
        "PseudoSegObjective.weight_decay = 0.0", "build_deeplab.batch_norm_decay = 1.0",
        "make_strategy.devices = ['/cpu:0', '/cpu:1']"], finalize=False)
    trainer.train(str(tmp_path / "seg"))
    trained = tf.train.load_checkpoint(str(tmp_path / "seg"))
    entry = "xception_65/entry_flow/conv1_1/weights"
    key = [k for k in trained.get_variable_to_shape_map()
           if k.startswith("model/") and "entry_flow_conv1_1.Sconv.Skernel" in k
           and "OPTIMIZER" not in k]
    assert len(key) == 1, key
    np.testing.assert_allclose(trained.get_tensor(key[0]), pretrained.get_tensor(entry),
                               rtol=1e-6)

    # The pretraining's own (object-based) checkpoint is not a warm start: the error names the
    # binding and the TF1-named copy to give instead, rather than training from scratch.
    gin.clear_config()
    experiment.parse_experiment_config(gin_files=["demo_supervised.gin"], gin_bindings=[
        f"DATA_DIR = '{seg_dir}'", f"train.init_checkpoint = '{logdir}'",
        "train.num_steps = 1", "train.crop_size = (33, 33)", "train.labelled_batch_size = 2",
        "build_deeplab.width_multiplier = 0.0625", "build_deeplab.middle_flow_units = 1",
        "make_sgc_head.attention_dim = 8", "make_strategy.devices = ['/cpu:0']"],
        finalize=False)
    with pytest.raises(ValueError, match=r"train\.init_checkpoint=.*holds none of the model's "
                       r"DeepLab TF1 variable names.*tf1/model\.ckpt"):
        trainer.train(str(tmp_path / "seg_from_tf2"))
