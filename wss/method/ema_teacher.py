"""An exponential-moving-average (EMA) teacher for the online pseudo labels (an extension).

PseudoSeg (paper and reference) makes the weak view's pseudo label with the network being
trained. With `train.ema_teacher_decay = d > 0` the weak-view pass runs instead on a teacher: a
copy of the DeepLab model and the SGC head whose every variable (weights and BatchNorm moving
statistics) follows the student's after each optimizer step,

    teacher <- d * teacher + (1 - d) * student,

as in Mean Teacher (Tarvainen & Valpola, 2017); `d = 1` freezes it. The teacher runs in
inference mode (BatchNorm on its moving statistics) and is never trained; it starts as an exact
copy of the student (after the warm start) and is saved in the run's checkpoints, so a resumed
run continues with the same teacher. Evaluation and export use the student, as without a
teacher.

With `train.teacher_checkpoint` (a supervised run's log directory or checkpoint) the teacher
starts from that run's model and SGC head instead of the student, and at `d = 1` it stays
there: PseudoSeg's pseudo labels then come from a model trained on the labelled images alone,
which the student's own confusions cannot move (the teacher of self-training, Zoph et al.,
2020, the PseudoSeg paper's table 6, made online and with the paper's pseudo labels).

Under `tf.distribute` the update runs in each replica after the optimizer's; the student's
weights are the same on every replica, so the teacher's stay the same too (BatchNorm moving
statistics are per replica for both, as everywhere in this project).
"""

import tensorflow as tf

from wss import config as config_lib


class EmaTeacher:
    """The teacher's models and their EMA update.

    Args:
      student_model: the DeepLab model being trained.
      student_sgc_head: its SGC head.
      teacher_model: a DeepLab model built the same way (same configuration), not trained.
      teacher_sgc_head: an SGC head built the same way.
      decay: the EMA decay `d` in (0, 1]; 1 freezes the teacher.

    Raises:
      ValueError: for a decay outside (0, 1], naming the binding, or teacher models whose
        variables do not match the student's one to one.
    """

    def __init__(self, student_model, student_sgc_head, teacher_model, teacher_sgc_head,
                 decay):
        self.decay = config_lib.check_number("train.ema_teacher_decay", decay, minimum=0,
                                             maximum=1, exclusive_minimum=True)
        self.model = teacher_model
        self.sgc_head = teacher_sgc_head
        self._pairs = (_pair_variables(student_model, teacher_model, "model")
                       + _pair_variables(student_sgc_head, teacher_sgc_head, "SGC head"))

    @property
    def variables(self):
        """The teacher's variables (model, then SGC head)."""
        return [teacher for _, teacher in self._pairs]

    def copy_from_student(self):
        """Sets every teacher variable to the student's value (start, after a warm start)."""
        for student, teacher in self._pairs:
            teacher.assign(student)

    def update(self):
        """One EMA step: `teacher <- decay * teacher + (1 - decay) * student` (float
        variables; integer ones, random-number states, are left as they are). Nothing moves at
        decay 1."""
        if self.decay == 1.0:
            return
        decay = tf.constant(self.decay, tf.float32)
        for student, teacher in self._pairs:
            if not tf.as_dtype(teacher.dtype).is_floating:
                continue  # Random-number states: unused in inference mode.
            value = tf.cast(student, tf.float32)
            current = tf.cast(teacher, tf.float32)
            teacher.assign(tf.cast(decay * current + (1.0 - decay) * value, teacher.dtype))


def _pair_variables(student, teacher, what):
    """The (student, teacher) variable pairs of two models built alike, checked."""
    pairs = list(zip(student.variables, teacher.variables))
    if len(student.variables) != len(teacher.variables) or any(
            tuple(s.shape) != tuple(t.shape) for s, t in pairs):
        raise ValueError(f"EMA teacher: the teacher's {what} does not match the student's "
                         f"({len(teacher.variables)} against {len(student.variables)} "
                         f"variables); build both with the same configuration")
    return pairs
