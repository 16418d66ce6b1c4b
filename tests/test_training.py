"""Training loop, checkpoints, evaluation and export at tiny sizes on 2 logical CPUs."""

import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.ops import iterator_ops
from tiny_runs import configure, generate_tiny_set, tiny_bindings

from wss import experiment
from wss.evaluation import evaluator as evaluation
from wss.tasks.segmentation import SegmentationTask
from wss.training import checkpointing, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_tiny_set(tmp_path_factory, seed=3, num_val=6)


@pytest.fixture(autouse=True)
def clean_gin():
    yield
    gin.clear_config()


@pytest.fixture
def input_resources(monkeypatch):
    """Weak references to the tf.data iterator resources created during a test.

    An iterator's resource lives as long as any tensor holding its handle, e.g. a traced graph
    that captured it; resources that outlive `train()` are destroyed only at interpreter exit,
    where each waits for its pipeline's autotuning thread (up to a minute apiece).
    """
    created = []
    original = iterator_ops.OwnedIterator.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if tf.executing_eagerly():  # Not the placeholders of traced functions.
            created.append(weakref.ref(self._iterator_resource))

    monkeypatch.setattr(iterator_ops.OwnedIterator, "__init__", init)
    return created


def assert_released(created):
    gc.collect()
    assert created, "no tf.data iterator was created"
    alive = [ref for ref in created if ref() is not None]
    assert not alive, f"{len(alive)} of {len(created)} iterator resources outlived train()"


def image_summary_steps(directory):
    """The steps at which the event files in `directory` hold image summaries."""
    steps = set()
    for path in tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    steps.add(event.step)
    return steps


def _checkpoint_values(logdir, step, prefix):
    reader = tf.train.load_checkpoint(os.path.join(logdir, f"ckpt-{step}"))
    names = sorted(n for n in reader.get_variable_to_shape_map()
                   if n.startswith(prefix) and "OPTIMIZER_SLOT" not in n)
    return {n[len(prefix):]: reader.get_tensor(n) for n in names}


def assert_ema_teacher_followed_the_student(logdir, decay):
    """Checkpoints 1 and 2 hold teacher_2 = decay * teacher_1 + (1 - decay) * student_2."""
    teacher_1 = _checkpoint_values(logdir, 1, "ema_teacher_model/")
    teacher_2 = _checkpoint_values(logdir, 2, "ema_teacher_model/")
    student_2 = _checkpoint_values(logdir, 2, "model/")
    assert teacher_1 and teacher_1.keys() == student_2.keys()
    moved = 0
    for name, value in teacher_2.items():
        if not np.issubdtype(value.dtype, np.floating):
            continue
        expected = decay * teacher_1[name].astype(np.float64) + (1 - decay) * student_2[name]
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        moved += not np.allclose(value, student_2[name])
    assert moved > 0
    assert _checkpoint_values(logdir, 2, "ema_teacher_sgc_head/")


def assert_alignment_was_saved(logdir):
    """The alignment's state is checkpointed: distributions moved off uniform, factors moved."""
    values = _checkpoint_values(logdir, 2, "distribution_alignment/")
    found = {name.split("/")[0]: value for name, value in values.items()}
    assert found["updates"] == 2.0  # Two steps: the replicas' updates were averaged, not summed.
    for name in ("labelled_marginal", "target_marginal"):
        np.testing.assert_allclose(found[name].sum(), 1.0, rtol=1e-5)
        assert np.ptp(found[name]) > 0, (name, found[name])
    assert np.abs(found["log_ratio"]).max() > 0


# Semi mode runs with an EMA teacher (`train.ema_teacher_decay`) and distribution alignment
# (`PseudoLabelConfig.align_distribution`, whose running means are updated in replica context),
# weak mode without and with class-balanced selection (`PseudoLabelConfig.keep_per_class`): both
# make online pseudo labels, so the two replica-context paths are covered in one test each.
@pytest.mark.parametrize("mode,ema_decay", [("supervised", 0.0), ("semi", 0.75),
                                            ("weak", 0.0)])
@pytest.mark.slow
def test_modes_run_on_two_replicas_with_finite_losses(tiny_data, tmp_path, mode, ema_decay,
                                                      input_resources, monkeypatch):
    extra = []
    if ema_decay:
        extra = [f"train.ema_teacher_decay = {ema_decay}", "train.checkpoint_every = 1",
                 "PseudoLabelConfig.align_distribution = True"]
    keep_per_class = 0.5 if mode == "weak" else 1.0
    extra.append(f"PseudoLabelConfig.keep_per_class = {keep_per_class}")
    configure(tiny_data, mode=mode, steps=2, extra=extra)  # Image summaries every 2 steps.
    traced = []
    replica_step = SegmentationTask.replica_step

    def counting_replica_step(self, *args):
        traced.append(args[-1])  # with_images
        return replica_step(self, *args)

    monkeypatch.setattr(SegmentationTask, "replica_step", counting_replica_step)
    result = trainer.train(str(tmp_path))
    # One trace (one call per replica), though step 2 writes images and step 1 does not.
    assert traced == [True, True]
    assert image_summary_steps(str(tmp_path / "train")) == {2}
    if ema_decay:  # Each step's update, after the optimizer's, reached the saved teacher.
        assert_ema_teacher_followed_the_student(str(tmp_path), ema_decay)
        assert_alignment_was_saved(str(tmp_path))
    assert_released(input_resources)
    assert result["step"] == 2
    expected = {"loss_s", "loss_x", "loss_sa", "loss_wd", "loss_total"}
    if mode != "supervised":
        expected.add("loss_u")
    assert expected <= set(result)
    for key in expected:
        assert np.isfinite(result[key]), (key, result[key])
    assert result["seconds"] > 0
    if mode != "supervised":  # The unlabelled records have masks: pseudo labels are scored.
        quality = dict(result["pseudo_labels"])
        reliability = quality.pop("reliability")
        assert set(quality) == {"confidence", "accuracy", "ece_decoder", "ece_sgc", "ece_fused",
                                "ece_targets", "kept_fraction", "kept_accuracy"}
        assert set(reliability) == {"decoder", "sgc", "fused", "targets"}
        assert all(0 <= value <= 1 for value in quality.values()), quality
        if keep_per_class < 1:  # About half of each class's pixels (more with ties).
            assert 0.4 < quality["kept_fraction"] < 0.9, quality
        else:
            assert quality["kept_fraction"] == 1.0
            assert quality["kept_accuracy"] == pytest.approx(quality["accuracy"])
        for source, bins in reliability.items():  # The diagram's bins give back the ECE.
            count = np.array(bins["count"])
            gaps = [abs(a - c) * n for a, c, n in
                    zip(bins["accuracy"], bins["confidence"], count) if n > 0]
            assert count.sum() > 0
            np.testing.assert_allclose(sum(gaps) / count.sum(), quality[f"ece_{source}"],
                                       rtol=1e-4, atol=1e-6)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    assert os.path.exists(tmp_path / experiment.CONFIG_FILENAME)


def test_frozen_teacher_starts_from_a_supervised_run(tiny_data, tmp_path):
    """`train.teacher_checkpoint` with `train.ema_teacher_decay = 1.0` in semi mode: the
    teacher is the supervised run's model and SGC head, and stays so while the student
    (from its own start, not the teacher) trains."""
    configure(tiny_data, mode="supervised", steps=2)
    trainer.train(str(tmp_path / "teacher"))
    gin.clear_config()
    configure(tiny_data, steps=2, extra=[
        f"train.teacher_checkpoint = '{tmp_path / 'teacher'}'", "train.ema_teacher_decay = 1.0",
        "make_strategy.devices = None"])
    trainer.train(str(tmp_path / "student"))
    supervised = experiment.build_models()
    experiment.restore_models(str(tmp_path / "teacher"), *supervised)
    student = experiment.build_models()
    experiment.restore_models(str(tmp_path / "student"), *student)
    teacher = experiment.build_models()
    tf.train.Checkpoint(ema_teacher_model=experiment.VariableStore(teacher[0]),
                        ema_teacher_sgc_head=experiment.VariableStore(teacher[1])).restore(
        str(tmp_path / "student" / "ckpt-2")).expect_partial()
    moved = 0
    for part in (0, 1):  # The model, then the SGC head.
        for s_var, t_var, own in zip(supervised[part].variables, teacher[part].variables,
                                     student[part].variables):
            if not np.issubdtype(s_var.numpy().dtype, np.floating):
                continue  # Seed-generator states.
            np.testing.assert_array_equal(t_var.numpy(), s_var.numpy(), err_msg=s_var.path)
            moved += not np.allclose(own.numpy(), s_var.numpy())
    assert moved > 0  # The student is another network: the comparison can fail.
    gin.clear_config()  # A teacher of another model fails naming the binding.
    configure(tiny_data, steps=2, extra=[
        f"train.teacher_checkpoint = '{tmp_path / 'teacher'}'", "train.ema_teacher_decay = 1.0",
        "build_deeplab.middle_flow_units = 2", "make_strategy.devices = None"])
    with pytest.raises(checkpointing.CheckpointError, match="train.teacher_checkpoint"):
        trainer.train(str(tmp_path / "other"))


@pytest.mark.slow
def test_supervised_overfits_four_images_and_evaluation_sees_it(tiny_data, tmp_path):
    """Four labelled images without scale augmentation: the model must fit them.

    The loss falls during training, and evaluating the final checkpoint in inference mode (on
    moving BatchNorm statistics) on the same four full 40 x 40 images finds most foreground
    pixels, far above the all-background prediction.
    """
    steps = 150
    configure(tiny_data, mode="supervised", steps=steps, extra=[
        "labelled_dataset.min_scale = 1.0", "labelled_dataset.max_scale = 1.0",
        # Adam, pinned: from scratch it fits four images in 150 steps, which the demo's SGD
        # (tuned for the pretrained warm start) does not.
        "make_optimizer.name = 'adam'",
        "make_optimizer.base_learning_rate = 0.1", "train.checkpoint_every = 1000",
        "train.image_summary_every = 0", "make_strategy.devices = ['/cpu:0']",
        "train.labelled_batch_size = 4", "train.log_every = 10",
        "build_deeplab.width_multiplier = 0.25",
        "train.crop_size = (41, 41)",
        # The whole image at every step, and enough width to fit four images in 150 steps.
        # Moving statistics that follow the weights (0.99 would keep 22% of the initial
        # ones), so that inference mode sees what training fitted.
        "build_deeplab.batch_norm_decay = 0.9"])
    result = trainer.train(str(tmp_path))
    history = result["history"]
    assert [h["step"] for h in history] == list(range(10, steps + 1, 10))
    first = np.mean([h["loss_s"] for h in history[:3]])
    last = np.mean([h["loss_s"] for h in history[-3:]])
    assert last < 0.6 * first, (first, last)

    results, _ = evaluation.evaluate_checkpoint(
        str(tmp_path), pattern=os.path.join(tiny_data, "train-*.tfrecord"),
        split_file=os.path.join(tiny_data, "labelled_1_16.txt"))
    assert results["num_images"] == 4
    matrix = np.asarray(results["confusion_matrix"], np.float64)
    total = matrix.sum()
    assert total == 4 * 40 * 40
    background_baseline = matrix[0].sum() / total  # Pixel accuracy of predicting background.
    foreground_recall = np.trace(matrix[1:, 1:]) / matrix[1:].sum()
    num_present = int(np.sum(matrix.sum(axis=1) > 0))
    report = (background_baseline, foreground_recall, num_present, results)
    # Predicting background everywhere: foreground recall 0, pixel accuracy
    # `background_baseline` (0.76 here) and mIoU `background_baseline / num_present` (a
    # background IoU of `background_baseline`, 0 for each foreground class present).
    assert foreground_recall > 0.6, report
    assert results["pixel_accuracy"] > background_baseline + 0.4 * (1 - background_baseline), report
    assert results["miou"] > max(0.4, 2 * background_baseline / num_present), report


@pytest.mark.slow
def test_resume_then_non_finite_loss_keeps_last_good_checkpoint(tiny_data, tmp_path,
                                                                input_resources):
    extra = ["make_strategy.devices = ['/cpu:0']", "train.image_summary_every = 0"]
    configure(tiny_data, mode="supervised", steps=2, extra=extra)
    trainer.train(str(tmp_path))
    gin.clear_config()
    configure(tiny_data, mode="supervised", steps=4, extra=extra)
    result = trainer.train(str(tmp_path))
    assert result["step"] == 4 and result["history"][0]["step"] == 3  # Resumed at step 2.
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-2", "ckpt-4"]

    gin.clear_config()
    configure(tiny_data, mode="supervised", steps=30,
              extra=extra + ["make_optimizer.base_learning_rate = 1e30"])
    with pytest.raises(trainer.NonFiniteLossError, match="non-finite.*ckpt-4") as raised:
        trainer.train(str(tmp_path))
    # The traceback keeps train()'s frame, but not the input pipelines.
    assert raised.traceback
    assert_released(input_resources)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.slow
def test_mixed_precision_trains_in_low_precision_and_restores_policy(
        tiny_data, tmp_path, monkeypatch, policy):
    """Float32 variables, low-precision compute, a loadable checkpoint, no leaked policy."""
    built = []
    original_build_models = experiment.build_models

    def build_models(**kwargs):
        built.append(original_build_models(**kwargs))
        return built[-1]

    monkeypatch.setattr(experiment, "build_models", build_models)
    loss_scale = policy == "mixed_float16"
    extra = ["make_strategy.devices = ['/cpu:0']", "train.image_summary_every = 0",
             f"train.mixed_precision_policy = '{policy}'",
             f"make_optimizer.loss_scale = {loss_scale}"]
    configure(tiny_data, mode="semi", steps=2, extra=extra)
    assert keras.mixed_precision.global_policy().name == "float32"
    result = trainer.train(str(tmp_path))
    assert keras.mixed_precision.global_policy().name == "float32"

    assert result["step"] == 2 and [h["step"] for h in result["history"]] == [1, 2]
    for key in ("loss_s", "loss_u", "loss_sa", "loss_x", "loss_total"):
        assert np.isfinite(result[key]), (key, result[key])
    compute = policy.split("_")[1]
    model, sgc_head = built[0]
    for layer in (model, sgc_head):
        assert layer.dtype_policy.name == policy
        floating = {v.dtype for v in layer.variables if v.dtype != "int64"}  # Not seed states.
        assert floating == {"float32"}, layer.name
    outputs = model(tf.zeros([1, 33, 33, 3]), training=False)
    assert outputs["features"]["final"].dtype == compute  # Backbone features.
    assert outputs["logits"].dtype == "float32"  # Cast for the losses and softmax.

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    dtypes = reader.get_variable_to_dtype_map()
    assert {dtypes[n] for n in dtypes if n.startswith("model/")} == {tf.float32}
    scales = [n for n in dtypes if n.startswith("optimizer/dynamic_scale")]
    if loss_scale:
        # Initial scale 2^15, halved on each overflow (growth needs 2000 good steps).
        assert len(scales) == 1
        expected = 2.0 ** 15 * 0.5 ** result["skipped_updates"]
        assert reader.get_tensor(scales[0]) == expected
    else:
        assert not scales and result["skipped_updates"] == 0
    # The checkpoint loads into a float32 model, as evaluation and export build it.
    fresh, _ = experiment.build_models(with_sgc_head=False)
    experiment.restore_models(str(tmp_path), fresh)
    assert fresh.compute_dtype == "float32"
    assert len(fresh.variables) == len(model.variables)
    for restored, trained in zip(fresh.variables, model.variables):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy(), err_msg=trained.path)

    # A failing run restores the previous policy too.
    gin.clear_config()
    configure(tiny_data, mode="semi", steps=2, extra=extra + [
        "train.labelled_pattern = '/nonexistent/train-*.tfrecord'"])
    with pytest.raises(Exception, match="/nonexistent/train"):
        trainer.train(str(tmp_path / "failed"))
    assert keras.mixed_precision.global_policy().name == "float32"


def _final_weights(logdir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(logdir))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("model/"))
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.slow
def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_data, tmp_path):
    extra = ["train.deterministic = True", "train.seed = 7",
             "train.image_summary_every = 0", "make_strategy.devices = ['/cpu:0']"]
    configure(tiny_data, mode="semi", steps=4, extra=extra)
    trainer.train(str(tmp_path / "straight"))
    gin.clear_config()
    configure(tiny_data, mode="semi", steps=4, extra=extra + ["train.steps_per_run = 2"])
    assert trainer.train(str(tmp_path / "resumed"))["step"] == 2
    gin.clear_config()
    configure(tiny_data, mode="semi", steps=4, extra=extra)
    trainer.train(str(tmp_path / "resumed"))
    straight = _final_weights(str(tmp_path / "straight"))
    resumed = _final_weights(str(tmp_path / "resumed"))
    assert straight.keys() == resumed.keys() and straight
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def test_bad_configuration_fails_before_training(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="train.no_such_parameter"):
        experiment.parse_experiment_config(
            gin_files=["demo.gin"], gin_bindings=["train.no_such_parameter = 1"],
            finalize=False)
    gin.clear_config()
    configure(tiny_data, extra=["train.labelled_pattern = '/nonexistent/train-*.tfrecord'"])
    with pytest.raises(Exception, match="/nonexistent/train"):
        trainer.train(str(tmp_path))
    assert not tf.io.gfile.glob(str(tmp_path / "ckpt-*"))


class _FixedModel:
    """Stands in for a DeepLab model: returns given logits whatever the image."""

    def __init__(self, logits):
        self.logits = tf.constant(logits, tf.float32)

    def __call__(self, images, training=False):
        del training
        return {"logits": self.logits}


def test_evaluation_of_known_predictions_gives_hand_computed_miou():
    # Prediction: left column class 1, right column class 0 (2 x 2 image, 3 classes).
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[0, :, 0, 1] = 5.0
    logits[0, :, 1, 0] = 5.0
    labels = np.array([[[1, 0], [0, 255]]], np.int32)
    dataset = tf.data.Dataset.from_tensors(
        {"image": tf.zeros([1, 2, 2, 3]), "label": tf.constant(labels)})
    results = evaluation.evaluate_model(_FixedModel(logits), dataset, num_classes=3)
    # Pixels: (label 1, pred 1), (0, 0), (0, 1); one ignored.
    # IoU class 0 = 1 / (2 + 1 - 1) = 0.5; class 1 = 1 / (1 + 2 - 1) = 0.5; class 2 absent.
    assert results["per_class_iou"]["0"] == pytest.approx(0.5)
    assert results["per_class_iou"]["1"] == pytest.approx(0.5)
    assert np.isnan(results["per_class_iou"]["2"])
    assert results["miou"] == pytest.approx(0.5)
    assert results["pixel_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_export_reloads_without_wss_and_matches(tiny_data, tmp_path):
    configure(tiny_data, mode="supervised", steps=1)
    logdir = str(tmp_path / "run")
    trainer.train(logdir)
    summary = trainer.after_training(logdir, evaluate=True, export=True,
                                     export_dir=str(tmp_path / "export"))
    assert 0.0 <= summary["miou"] <= 1.0
    assert os.path.exists(summary["results"])

    model, _ = experiment.build_models(with_sgc_head=False)
    experiment.restore_models(logdir, model)
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 29, 3)).astype(np.uint8)
    from wss.resize import resize_bilinear
    # DeepLab's protocol: pad to n * output_stride + 1 with the mean pixel, upsample, crop.
    stride = model.output_stride
    height, width = (-(-(size - 1) // stride) * stride + 1 for size in (37, 29))
    padded = np.pad(images.astype(np.float32), ((0, 0), (0, height - 37), (0, width - 29), (0, 0)),
                    constant_values=127.5)
    logits = resize_bilinear(model(tf.constant(padded))["logits"], (height, width))[:, :37, :29]
    expected = tf.argmax(logits, -1, output_type=tf.int32).numpy()

    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "assert 'wss' not in sys.modules\n"
        f"serve = tf.saved_model.load({str(tmp_path / 'export')!r}).signatures["
        "'serving_default']\n"
        f"out = serve(images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))\n"
        f"np.save({str(tmp_path / 'served.npy')!r}, out['class_map'].numpy())\n"
        "assert out['probabilities'].shape[-1] == 11\n"
    )
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-I", "-c", script], check=True, cwd=str(tmp_path), env=env,
                   timeout=120)
    served = np.load(tmp_path / "served.npy")
    assert served.shape == (2, 37, 29) and served.dtype == np.int32
    np.testing.assert_array_equal(served, expected)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes(tiny_data, tmp_path):
    logdir = str(tmp_path / "run")
    command = [sys.executable, "-m", "wss.train", "--gin_file=demo.gin", f"--logdir={logdir}"]
    for binding in tiny_bindings(tiny_data, mode="supervised", steps=400, extra=[
            "train.checkpoint_every = 3", "train.image_summary_every = 0",
            "make_strategy.devices = ['/cpu:0']", "after_training.evaluate = False"]):
        command.append(f"--gin_bindings={binding}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not tf.io.gfile.glob(os.path.join(logdir, "ckpt-6*")):
            time.sleep(0.5)
        assert tf.io.gfile.glob(os.path.join(logdir, "ckpt-6*")), "no checkpoint in time"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    killed_at = tf.train.latest_checkpoint(logdir)
    assert killed_at is not None
    step = int(killed_at.rsplit("-", 1)[1])
    command = [c.replace("train.num_steps = 400", f"train.num_steps = {step + 2}")
               for c in command]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"Resumed from {killed_at}" in completed.stdout
    with open(os.path.join(logdir, "train_result.json")) as f:
        assert json.load(f)["step"] == step + 2


@pytest.mark.slow
def test_cli_exits_promptly_after_training_on_two_replicas(tiny_data, tmp_path):
    """`python -m wss.train` on 2 logical CPUs exits without waiting on tf.data teardown.

    The distributed input pipelines must be gone before interpreter exit: destroying one there
    waits for its autotuning thread to wake, up to a minute apiece (see `input_resources`).
    """
    logdir = str(tmp_path / "run")
    script = (
        "import runpy, sys, time\n"
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()]"
        " * 2)\n"
        "sys.argv[0] = 'wss.train'\n"
        "try:\n"
        "    runpy.run_module('wss.train', run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        "    print(f'MAIN RETURNED {time.time()}', flush=True)\n"
    )
    command = [sys.executable, "-c", script, "--gin_file=demo.gin", f"--logdir={logdir}"]
    for binding in tiny_bindings(tiny_data, mode="supervised", steps=2, extra=[
            "train.image_summary_every = 0", "after_training.evaluate = False",
            "after_training.export = False"]):
        command.append(f"--gin_bindings={binding}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=240)
    exited = time.time()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "on 2 replica(s)" in completed.stdout
    returned = float(completed.stdout.split("MAIN RETURNED ")[1].split()[0])
    assert exited - returned < 20, exited - returned
    with open(os.path.join(logdir, "train_result.json")) as f:
        assert json.load(f)["step"] == 2
