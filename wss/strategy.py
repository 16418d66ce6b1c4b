"""Choosing a `tf.distribute` strategy by name: mirrored, tpu, multi_worker, one_device."""

import gin
import tensorflow as tf
from absl import logging

STRATEGIES = ("mirrored", "tpu", "multi_worker", "one_device")


@gin.configurable
def make_strategy(name="mirrored", tpu=None, devices=None):
    """Builds a distribution strategy.

    Args:
      name: one of `STRATEGIES`. `mirrored` uses every local GPU, or the CPU when there is none;
        `multi_worker` reads the cluster from the `TF_CONFIG` environment variable; `tpu`
        connects to `tpu` (a name, a `grpc://` address, or `local` on a TPU VM).
      tpu: TPU address for `name='tpu'`.
      devices: explicit device list for `mirrored` (e.g. two logical CPUs in tests), or the
        device for `one_device`.

    Returns:
      A `tf.distribute.Strategy`.

    Raises:
      ValueError: for an unknown name or a TPU strategy without an address.
    """
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "one_device":
        device = devices[0] if devices else (
            "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
        strategy = tf.distribute.OneDeviceStrategy(device)
    elif name == "multi_worker":
        communication = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=communication)
    elif name == "tpu":
        if not tpu:
            raise ValueError("--strategy=tpu needs --tpu=ADDRESS (or 'local' on a TPU VM)")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    logging.info("Strategy %s with %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy
