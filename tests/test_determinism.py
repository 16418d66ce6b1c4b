"""A deterministic run turns TensorFlow's op determinism on and Grappler's rewriting off."""

import tensorflow as tf

from wss.training import determinism


def _grappler_off():
    return tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)


def test_a_deterministic_run_turns_grappler_off_and_restores_both():
    before = (_grappler_off(), determinism.op_determinism_enabled())
    restore = determinism.enable()
    try:
        assert _grappler_off() is True and determinism.op_determinism_enabled()
    finally:
        restore()
    assert (_grappler_off(), determinism.op_determinism_enabled()) == before
