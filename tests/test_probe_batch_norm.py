"""benchmarks/probe_batch_norm.py: re-estimating BatchNorm moving statistics ("precise BN")."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from script_loading import load_script

from wss.models.layers import FusedBatchNormalization


@pytest.fixture(scope="module")
def probe():
    return load_script("benchmarks/probe_batch_norm.py")


def _model():
    inner = keras.Sequential([keras.layers.Conv2D(2, 1), FusedBatchNormalization(momentum=0.9)])
    model = keras.Sequential([FusedBatchNormalization(momentum=0.99), inner])
    model(tf.zeros([1, 4, 4, 3]))
    return model


def test_moving_statistics_become_the_mean_of_the_batch_statistics(probe):
    model = _model()
    first = model.layers[0]
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=k, scale=1 + k, size=(2, 4, 4, 3)).astype(np.float32)
               for k in range(3)]
    inner = model.layers[1].layers[1]
    inner_variance_before = inner.moving_variance.numpy().copy()
    assert probe.reestimate_batch_norm(model, batches) == 3
    flat = [np.asarray(batch, np.float64).reshape(-1, 3) for batch in batches]
    np.testing.assert_allclose(first.moving_mean.numpy(),
                               np.mean([x.mean(axis=0) for x in flat], axis=0), rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(),
                               np.mean([x.var(axis=0) for x in flat], axis=0), rtol=1e-4)
    # Nested layers are re-estimated too (their inputs have zero mean here, so the variance
    # shows it), and every momentum is restored.
    assert not np.allclose(inner.moving_variance.numpy(), inner_variance_before, rtol=1e-2)
    assert [layer.momentum for layer in probe.batch_norm_layers(model)] == [0.99, 0.9]


def test_bad_input_is_refused(probe):
    with pytest.raises(ValueError, match="no batches"):
        probe.reestimate_batch_norm(_model(), [])
    dense = keras.Sequential([keras.layers.Dense(2)])
    dense(tf.zeros([1, 3]))
    with pytest.raises(ValueError, match="no BatchNormalization"):
        probe.reestimate_batch_norm(dense, [np.zeros([1, 3], np.float32)])
