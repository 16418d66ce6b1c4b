"""Optimizer and learning-rate schedule as DeepLab trains: SGD with momentum, poly decay.

DeepLab's `poly` policy is `base_lr * (1 - step / total_steps) ** power`, optionally preceded
by a "slow start" of `slow_start_steps` steps at a constant small rate.
"""

import gin
import keras
import tensorflow as tf


class PolyWithSlowStart(keras.optimizers.schedules.LearningRateSchedule):
    """Polynomial decay to `end_learning_rate` with an optional constant slow start.

    Args:
      base_learning_rate: the rate at step 0 of the decay.
      decay_steps: the step at which the rate reaches `end_learning_rate`.
      power: the polynomial power (DeepLab: 0.9).
      end_learning_rate: the final rate.
      slow_start_steps: steps trained at `slow_start_learning_rate` before the decay applies.
      slow_start_learning_rate: the rate during the slow start.
    """

    def __init__(self, base_learning_rate, decay_steps, power=0.9, end_learning_rate=0.0,
                 slow_start_steps=0, slow_start_learning_rate=1e-4):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.base_learning_rate = float(base_learning_rate)
        self.decay_steps = int(decay_steps)
        self.power = float(power)
        self.end_learning_rate = float(end_learning_rate)
        self.slow_start_steps = int(slow_start_steps)
        self.slow_start_learning_rate = float(slow_start_learning_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        progress = tf.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        decayed = ((self.base_learning_rate - self.end_learning_rate)
                   * tf.pow(1.0 - progress, self.power) + self.end_learning_rate)
        return tf.where(step < self.slow_start_steps,
                        tf.constant(self.slow_start_learning_rate, tf.float32), decayed)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "decay_steps": self.decay_steps,
            "power": self.power,
            "end_learning_rate": self.end_learning_rate,
            "slow_start_steps": self.slow_start_steps,
            "slow_start_learning_rate": self.slow_start_learning_rate,
        }


OPTIMIZERS = ("momentum", "adam")


@gin.configurable(denylist=["num_steps"])
def make_optimizer(num_steps, base_learning_rate=0.007, power=0.9, momentum=0.9,
                   end_learning_rate=0.0, slow_start_steps=0, slow_start_learning_rate=1e-4,
                   loss_scale=False, name="momentum", adam_epsilon=1e-8):
    """Builds DeepLab's optimizer: SGD with momentum (or Adam) on a poly schedule.

    Call inside `strategy.scope()`.

    Args:
      num_steps: total training steps (the decay length).
      base_learning_rate: DeepLab's 0.007 for VOC with batch 16 (per step, not per replica).
      power: poly power.
      momentum: SGD momentum.
      end_learning_rate: rate at the last step.
      slow_start_steps: constant-rate warm-up steps.
      slow_start_learning_rate: rate during warm-up.
      loss_scale: wrap in a dynamic `LossScaleOptimizer` (for `mixed_float16`).
      name: `momentum` (DeepLab's default) or `adam` (DeepLab's `--optimizer=adam`).
      adam_epsilon: Adam's epsilon (DeepLab: 1e-8).

    Returns:
      A Keras optimizer.

    Raises:
      ValueError: for an unknown optimizer name or a value out of range, naming the binding.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"make_optimizer.name={name!r}; choose one of {OPTIMIZERS}")
    _check_bindings(base_learning_rate, power, momentum, end_learning_rate, slow_start_steps,
                    slow_start_learning_rate, adam_epsilon)
    schedule = PolyWithSlowStart(base_learning_rate, num_steps, power, end_learning_rate,
                                 slow_start_steps, slow_start_learning_rate)
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=schedule, epsilon=adam_epsilon)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum)
    if loss_scale:
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def _check_bindings(base_learning_rate, power, momentum, end_learning_rate, slow_start_steps,
                    slow_start_learning_rate, adam_epsilon):
    """Fails naming the `make_optimizer` binding whose value cannot train a model."""
    from wss.config import check_int, check_number

    # 0 is allowed: a run that must leave the weights as they are (tests, diagnostics).
    check_number("make_optimizer.base_learning_rate", base_learning_rate, minimum=0)
    check_number("make_optimizer.power", power, minimum=0, exclusive_minimum=True)
    check_number("make_optimizer.momentum", momentum, minimum=0, maximum=1,
                 exclusive_maximum=True)
    check_number("make_optimizer.end_learning_rate", end_learning_rate, minimum=0,
                 maximum=base_learning_rate)
    check_int("make_optimizer.slow_start_steps", slow_start_steps, minimum=0)
    check_number("make_optimizer.slow_start_learning_rate", slow_start_learning_rate,
                 minimum=0)
    check_number("make_optimizer.adam_epsilon", adam_epsilon, minimum=0,
                 exclusive_minimum=True)
