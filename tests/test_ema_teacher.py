"""The EMA teacher of the online pseudo labels (`wss.method.ema_teacher`).

Bound as `train.ema_teacher_decay`.

Checked: the update against a float64 numpy reference, that the weak-view pass runs on the
teacher in inference mode, and in the training loop on 2 replicas that every step applies the
update, after the optimizer's, to the teacher that the checkpoints hold (a resumed run restores
every object of its checkpoint, `checkpointing.restore_checkpoint`).
"""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
from test_training import configure, tiny_data  # noqa: F401 (a fixture)

from wss.method import sgc
from wss.method.ema_teacher import EmaTeacher
from wss.method.objective import PseudoSegObjective
from wss.method.pseudo_labels import PseudoLabelConfig
from wss.training import trainer

NUM_CLASSES = 5
SIZE = 33


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


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


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, True])
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


def _deeplab_pair():
    from wss.models import build_deeplab

    model = build_deeplab(num_classes=NUM_CLASSES, width_multiplier=0.0625, middle_flow_units=1)
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=8)
    image = tf.zeros([1, SIZE, SIZE, 3])
    features = model(image, training=False)["features"]
    sgc.sgc_logits(head, features["final"], features["penultimate"],
                   tf.zeros([1, NUM_CLASSES - 1]), valid=tf.ones([1, SIZE, SIZE]),
                   classifier_kernel=model.classifier_kernel, training=False)
    return model, head


def test_weak_view_pass_runs_on_the_teacher_in_inference_mode():
    keras.utils.set_random_seed(0)
    student, student_head = _deeplab_pair()
    teacher, teacher_head = _deeplab_pair()
    ema = EmaTeacher(student, student_head, teacher, teacher_head, decay=0.99)
    rng = np.random.default_rng(0)
    unlabelled = {"image": tf.constant(rng.uniform(0, 255, (2, SIZE, SIZE, 3)), tf.float32),
                  "valid": tf.ones([2, SIZE, SIZE])}
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


def _checkpoint_values(logdir, step, prefix):
    reader = tf.train.load_checkpoint(f"{logdir}/ckpt-{step}")
    names = sorted(n for n in reader.get_variable_to_shape_map()
                   if n.startswith(prefix) and "OPTIMIZER_SLOT" not in n)
    return {n[len(prefix):]: reader.get_tensor(n) for n in names}


@pytest.mark.slow
def test_training_updates_the_saved_teacher_after_each_step(tiny_data, tmp_path):  # noqa: F811
    extra = ["train.ema_teacher_decay = 0.75", "train.checkpoint_every = 1",
             "train.image_summary_every = 0", "train.seed = 3"]
    logdir = str(tmp_path / "run")
    configure(tiny_data, mode="semi", steps=2, extra=extra)
    assert trainer.train(logdir)["step"] == 2
    teacher_1 = _checkpoint_values(logdir, 1, "ema_teacher_model/")
    teacher_2 = _checkpoint_values(logdir, 2, "ema_teacher_model/")
    student_2 = _checkpoint_values(logdir, 2, "model/")
    assert teacher_1 and teacher_1.keys() == student_2.keys()
    moved = 0
    for name, value in teacher_2.items():
        if not np.issubdtype(value.dtype, np.floating):
            continue
        expected = 0.75 * teacher_1[name].astype(np.float64) + 0.25 * student_2[name]
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        moved += not np.allclose(value, student_2[name])
    assert moved > 0
    assert _checkpoint_values(logdir, 2, "ema_teacher_sgc_head/")


def test_ema_teacher_in_supervised_mode_fails_naming_the_binding(tiny_data,  # noqa: F811
                                                                  tmp_path):
    configure(tiny_data, mode="supervised", extra=["train.ema_teacher_decay = 0.99"])
    with pytest.raises(ValueError, match="train.ema_teacher_decay"):
        trainer.train(str(tmp_path))
