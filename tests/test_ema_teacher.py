"""The EMA teacher of the online pseudo labels (`wss.method.ema_teacher`).

Bound as `train.ema_teacher_decay` (and `train.teacher_checkpoint` for its start).

Checked here: the update against a float64 numpy reference, that decay 1 freezes the
teacher, that the weak-view pass runs on the teacher in inference mode, and the bindings'
errors. In the training loop on 2 replicas
(`test_training.test_modes_run_on_two_replicas_with_finite_losses[semi-0.75]`): every step
applies the update, after the optimizer's, to the teacher that the checkpoints hold (a resumed
run restores every object of its checkpoint, `checkpointing.restore_checkpoint`); in
`test_training.test_frozen_teacher_starts_from_a_supervised_run`: a semi run with
`train.teacher_checkpoint` and decay 1 keeps that run's weights as its teacher.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_runs import configure

from wss.method import sgc
from wss.method.ema_teacher import EmaTeacher
from wss.method.objective import PseudoSegObjective
from wss.method.pseudo_labels import PseudoLabelConfig
from wss.training import trainer

NUM_CLASSES = 5
SIZE = 33


def _tiny_pair(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Dense(3), keras.layers.BatchNormalization()])
    model(tf.zeros([2, 4]))
    head = keras.Sequential([keras.layers.Dense(2)])
    head(tf.zeros([1, 3]))
    return model, head


def test_update_follows_the_student_as_a_float64_reference():
    student, student_head = _tiny_pair(0)
    teacher, teacher_head = _tiny_pair(1)
    ema = EmaTeacher(student, student_head, teacher, teacher_head, decay=0.9)
    ema.copy_from_student()
    for s, t in zip(student.variables + student_head.variables, ema.variables):
        np.testing.assert_array_equal(s.numpy(), t.numpy())
    reference = [np.asarray(v.numpy(), np.float64) for v in ema.variables]
    rng = np.random.default_rng(0)
    for _ in range(3):  # The student moves; the teacher follows by 10% of the way each step.
        for variable in student.variables + student_head.variables:
            variable.assign(variable.numpy() + rng.normal(size=variable.shape).astype(np.float32))
        ema.update()
        students = [np.asarray(v.numpy(), np.float64)
                    for v in student.variables + student_head.variables]
        reference = [0.9 * r + 0.1 * s for r, s in zip(reference, students)]
    for r, t in zip(reference, ema.variables):
        np.testing.assert_allclose(t.numpy(), r, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ema.variables[0].numpy(), student.variables[0].numpy())


def test_decay_one_freezes_the_teacher():
    student, student_head = _tiny_pair(0)
    teacher, teacher_head = _tiny_pair(1)
    ema = EmaTeacher(student, student_head, teacher, teacher_head, decay=1.0)
    frozen = [v.numpy() for v in ema.variables]
    for variable in student.variables + student_head.variables:
        variable.assign(variable.numpy() + 1.0)
    ema.update()
    for t, f in zip(ema.variables, frozen):
        np.testing.assert_array_equal(t.numpy(), f)


@pytest.mark.parametrize("decay", [0.0, 1.5, -0.5, True])
def test_bad_decay_names_the_binding(decay):
    student, student_head = _tiny_pair(0)
    teacher, teacher_head = _tiny_pair(1)
    with pytest.raises(ValueError, match="train.ema_teacher_decay"):
        EmaTeacher(student, student_head, teacher, teacher_head, decay=decay)


def test_teacher_built_otherwise_is_refused():
    student, student_head = _tiny_pair(0)
    other = keras.Sequential([keras.layers.Dense(5)])
    other(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="same configuration"):
        EmaTeacher(student, student_head, other, student_head, decay=0.5)


def _deeplab_pair(**model_kwargs):
    """A tiny DeepLab model and its built SGC head; `model_kwargs` go to `build_deeplab`."""
    from wss.models import build_deeplab

    model = build_deeplab(num_classes=NUM_CLASSES, width_multiplier=0.0625, middle_flow_units=1,
                          **model_kwargs)
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=8)
    image = tf.zeros([1, SIZE, SIZE, 3])
    features = model(image, training=False)["features"]
    sgc.sgc_logits(head, features["final"], features["penultimate"],
                   tf.zeros([1, NUM_CLASSES - 1]), valid=tf.ones([1, SIZE, SIZE]),
                   classifier_kernel=model.classifier_kernel, training=False)
    return model, head


def _student_teacher_and_batch(decay):
    """A tiny student, its EMA teacher (another initialisation) and an unlabelled batch."""
    keras.utils.set_random_seed(0)
    student, student_head = _deeplab_pair()
    teacher, teacher_head = _deeplab_pair()
    ema = EmaTeacher(student, student_head, teacher, teacher_head, decay=decay)
    rng = np.random.default_rng(0)
    unlabelled = {"image": tf.constant(rng.uniform(0, 255, (2, SIZE, SIZE, 3)), tf.float32),
                  "valid": tf.ones([2, SIZE, SIZE])}
    return student, student_head, teacher, ema, unlabelled


def test_weak_view_pass_runs_on_the_teacher_in_inference_mode():
    student, student_head, teacher, ema, unlabelled = _student_teacher_and_batch(0.99)
    config = PseudoLabelConfig(source="decoder", temperature=1.0)
    objective = PseudoSegObjective(student, student_head, pseudo_labels=config, teacher=ema)
    pseudo = objective.pseudo_label_pass(unlabelled)
    expected = teacher(unlabelled["image"], training=False)["logits"].numpy()
    np.testing.assert_allclose(pseudo["decoder_logits"].numpy(), expected, rtol=1e-5,
                               atol=1e-5)
    own = student(unlabelled["image"], training=True)["logits"].numpy()
    assert not np.allclose(own, expected, atol=1e-3)  # Another network: the test can fail.
    with pytest.raises(ValueError, match="ema_teacher_decay"):
        PseudoSegObjective(student, student_head, mode="supervised", teacher=ema)


def test_teacher_mirror_averages_the_softmax_of_the_mirrored_view():
    """`teacher_mirror`: the teacher's decoder distribution against a float64 numpy reference."""
    student, student_head, teacher, ema, unlabelled = _student_teacher_and_batch(1.0)
    image = unlabelled["image"].numpy()
    rng = np.random.default_rng(1)
    for variable in teacher.trainable_variables:  # An untrained network is nearly constant.
        variable.assign(variable + rng.normal(0, 0.3, variable.shape).astype(np.float32))
    config = PseudoLabelConfig(source="decoder", temperature=1.0)
    objective = PseudoSegObjective(student, student_head, pseudo_labels=config, teacher=ema,
                                   teacher_mirror=True)
    pseudo = objective.pseudo_label_pass(unlabelled)

    def softmax(logits):
        logits = np.asarray(logits, np.float64)
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        return exp / exp.sum(-1, keepdims=True)

    plain = softmax(teacher(tf.constant(image, tf.float32), training=False)["logits"])
    mirrored = softmax(teacher(tf.constant(image[:, :, ::-1], tf.float32),
                               training=False)["logits"])[:, :, ::-1]
    expected = 0.5 * (plain + mirrored)
    np.testing.assert_allclose(softmax(pseudo["decoder_logits"]), expected, atol=1e-5)
    np.testing.assert_allclose(pseudo["targets"].numpy(), expected, atol=1e-5)  # T = 1.
    assert np.abs(mirrored - plain).max() > 1e-3  # The views differ, so the test can fail.
    with pytest.raises(ValueError, match="teacher_mirror = True averages a teacher's"):
        PseudoSegObjective(student, student_head, pseudo_labels=config,  # Semi, no teacher.
                           teacher_mirror=True)
    with pytest.raises(ValueError, match="PseudoSegObjective.teacher_mirror = False with the"):
        PseudoSegObjective(student, student_head, teacher=ema, teacher_mirror=True,
                           pseudo_labels=PseudoLabelConfig(source="fusion"))
    # Modes without online pseudo labels ignore it (demo_supervised.gin includes demo.gin).
    PseudoSegObjective(student, student_head, mode="supervised", teacher_mirror=True)


def test_ema_teacher_in_supervised_mode_fails_naming_the_binding(tmp_path):
    # Checked before any data is read: the data directory need not exist.
    configure(str(tmp_path / "no_data"), mode="supervised",
              extra=["train.ema_teacher_decay = 0.99"])
    with pytest.raises(ValueError, match="train.ema_teacher_decay"):
        trainer.train(str(tmp_path))


@pytest.mark.parametrize("bindings, match", [
    (["train.teacher_checkpoint = '/no/such/run'"], "starts the EMA teacher"),
    (["train.teacher_checkpoint = '/no/such/run'", "train.ema_teacher_decay = 1.0"],
     "no/such/run"),
])
def test_bad_teacher_checkpoint_in_semi_mode_names_the_binding(tmp_path, bindings, match):
    # Checked before any data is read or pretraining built: the data directory need not exist.
    configure(str(tmp_path / "no_data"), extra=bindings)
    with pytest.raises(ValueError, match=match) as error:
        trainer.train(str(tmp_path / "run"))
    assert "train.teacher_checkpoint" in str(error.value)


def test_teacher_of_another_model_names_the_binding(tmp_path):
    """`self_training.restore_teacher` (the frozen teacher's and the offline teacher's restore)
    restores a matching checkpoint weight for weight and names `train.teacher_checkpoint` for a
    checkpoint of another model."""
    from wss import experiment
    from wss.method import self_training
    from wss.models import build_deeplab
    from wss.training import checkpointing

    model, head = _deeplab_pair()
    prefix = experiment.make_checkpoint(model, head).save(str(tmp_path / "run" / "ckpt"))
    twin, twin_head = _deeplab_pair()
    assert self_training.restore_teacher(prefix, twin, twin_head) == prefix
    for restored, saved in zip(twin.variables + twin_head.variables,
                               model.variables + head.variables):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
    wider = build_deeplab(num_classes=NUM_CLASSES, width_multiplier=0.125, middle_flow_units=1)
    with pytest.raises(checkpointing.CheckpointError, match="train.teacher_checkpoint"):
        self_training.restore_teacher(prefix, wider)
