"""Optimizer and learning-rate schedule as DeepLab trains: SGD with momentum, poly decay.

DeepLab's `poly` policy is `base_lr * (1 - step / total_steps) ** power`, optionally preceded
by a "slow start" of `slow_start_steps` steps at a constant small rate.

`SGD` is Keras's SGD with its momentum update computed by one fused TensorFlow op per variable
(`ResourceApplyKerasMomentum`, the same arithmetic) instead of five (two multiplications, a
subtraction and two assignments): on the CPU those element-wise passes over the 41M weights of
Xception-65 were the largest cost of a step outside the network (`docs/performance.md`).
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


class SGD(keras.optimizers.SGD):
    """Keras's SGD whose momentum update is one fused TensorFlow op per variable.

    Same arguments, variables (`<path>_momentum`), checkpoints and arithmetic as
    `keras.optimizers.SGD`: `m = m * momentum - lr * g; w = w + m`, done by
    `ResourceApplyKerasMomentum`, which computes exactly this (and has CPU, GPU and XLA
    kernels). Nesterov momentum, zero momentum, sparse gradients and backends other than
    TensorFlow take Keras's own update.
    """

    def update_step(self, gradient, variable, learning_rate):
        """Applies one update to `variable` (see the class docstring)."""
        if (self.momentum == 0 or self.nesterov or isinstance(gradient, tf.IndexedSlices)
                or keras.backend.backend() != "tensorflow"):
            return super().update_step(gradient, variable, learning_rate)
        accumulator = self.momentums[self._get_variable_index(variable)]
        variable = variable.value if isinstance(variable, keras.Variable) else variable
        accumulator = (accumulator.value if isinstance(accumulator, keras.Variable)
                       else accumulator)
        # Inside `Strategy.extended.update` (how Keras applies gradients) the handles of
        # distributed variables are those of the local copy.
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=accumulator.handle,
            lr=tf.cast(learning_rate, variable.dtype), grad=tf.cast(gradient, variable.dtype),
            momentum=tf.cast(self.momentum, variable.dtype), use_locking=False,
            use_nesterov=False)
        return None


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
      A Keras optimizer (`SGD` above, a `keras.optimizers.SGD`, for `momentum`).

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
        optimizer = SGD(learning_rate=schedule, momentum=momentum)
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
