"""Checkpoint layout: every variable of the model and the SGC head survives save and restore."""

import numpy as np
import tensorflow as tf

from wss import experiment
from wss.method import sgc
from wss.models import build_deeplab


def _models(seed):
    tf.random.set_seed(seed)
    model = build_deeplab(num_classes=4, width_multiplier=0.0625, middle_flow_units=2)
    head = sgc.make_sgc_head(4, attention_dim=8)
    features = model(tf.zeros([1, 33, 33, 3]))["features"]
    sgc.sgc_logits(head, features["final"], features["penultimate"], tf.ones([1, 3]),
                   classifier_kernel=model.classifier_kernel)
    return model, head


def test_save_restore_covers_every_variable(tmp_path):
    model, head = _models(0)
    rng = np.random.default_rng(0)
    for variable in model.variables + head.variables:  # BatchNorm statistics included.
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    path = experiment.make_checkpoint(model, head).save(str(tmp_path / "ckpt"))

    fresh_model, fresh_head = _models(1)
    experiment.restore_models(path, fresh_model, fresh_head)
    for saved, restored in zip(model.variables + head.variables,
                               fresh_model.variables + fresh_head.variables):
        if "seed_generator" in saved.path:  # Saved separately as random_states.
            continue
        assert saved.path == restored.path
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)
    assert len(model.variables) > 100
