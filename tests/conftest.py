"""Test-session setup: quiet TensorFlow, two logical CPU devices, a clean gin config per test.

The logical device split must happen before TensorFlow initialises its devices, so it is done
at import time of this conftest, which pytest loads before any test module.
"""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Tests never read or write the user's cache (`wss.cache`): whatever a test caches (a teacher
# that a supervised run shares, a generated set) goes to a directory of this session.
_CACHE_DIR = tempfile.mkdtemp(prefix="wss_test_cache_")
os.environ["WSS_CACHE_DIR"] = _CACHE_DIR

import gin  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # Devices were already initialised by an earlier import; keep them.
    pass
# Grappler's graph rewrites cost more than they save on the tiny graphs of the tests (the
# training tests trace full Xception-65 graphs at toy widths); results are unaffected.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


@pytest.fixture(autouse=True)
def clean_gin():
    """Every test starts and ends with an empty gin config: no binding leaks between tests."""
    gin.clear_config()
    yield
    gin.clear_config()


_EXIT_STATUS = {"status": 0}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_unconfigure(config):
    """Exits without interpreter teardown once pytest has printed its summary.

    TensorFlow 2.21 can deadlock while destroying the multi-device iterators of
    MirroredStrategy datasets at interpreter exit (seen in `~MultiDeviceIterator` waiting on
    its thread pool). The results are already reported, so skip the teardown.
    """
    del config
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["status"])
