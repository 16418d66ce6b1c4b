"""Choosing a `tf.distribute` strategy by name: mirrored, tpu, multi_worker, one_device."""

import os
import re

import gin
import tensorflow as tf
from absl import logging

from wss import cpu_share

STRATEGIES = ("mirrored", "tpu", "multi_worker", "one_device")
# A TPU name (`my-tpu`), `local`, or an address such as `grpc://10.0.0.2:8470`.
_TPU_ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$")


def flag_bindings(strategy=None, tpu=None):
    """The gin bindings of the `--strategy` and `--tpu` flags of `wss.train` / `wss.pretrain`.

    Args:
      strategy: the `--strategy` value (one of `STRATEGIES`) or None.
      tpu: the `--tpu` value or None.

    Returns:
      A list of binding strings, values quoted with `repr` (no flag text reaches gin
      unquoted).

    Raises:
      ValueError: naming the flag, for `--tpu` without `--strategy=tpu` or a `--tpu` value
        that is not a TPU name or address.
    """
    bindings = []
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise ValueError(f"--strategy={strategy!r}: choose one of {STRATEGIES}")
        bindings.append(f"make_strategy.name = {strategy!r}")
    if tpu is not None:
        if strategy != "tpu":
            raise ValueError(f"--tpu={tpu!r} is only used with --strategy=tpu; add "
                             "--strategy=tpu or drop --tpu")
        if not _TPU_ADDRESS.match(tpu):
            raise ValueError(f"--tpu={tpu!r}: expected a TPU name, 'local' or an address such "
                             "as grpc://10.0.0.2:8470")
        bindings.append(f"make_strategy.tpu = {tpu!r}")
    return bindings


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


def configure_cpu_threads(strategy_name=None, environ=None):
    """Sizes TensorFlow's thread pools for a training process that runs on the CPU alone.

    TensorFlow gives every op all the cores and runs as many ops at once; on a CPU-only machine
    that oversubscribes the cores when a step has independent passes. This sets
    `wss.cpu_share.training_thread_pools()` instead (2 cores: one thread per op, two ops at
    once; a PseudoSeg step 0.72-0.80x the time, pretraining 1.16x the images per second). It
    does nothing when a GPU is visible, for the TPU strategy, or when `TF_NUM_INTRAOP_THREADS`
    or `TF_NUM_INTEROP_THREADS` is set (TensorFlow then uses those). Call it before TensorFlow
    runs its first op.

    Args:
      strategy_name: the strategy the run will use (`make_strategy.name`); None reads it from
        the parsed gin config (default `mirrored`).
      environ: the environment to check (default: this process's).

    Returns:
      (intra_op_threads, inter_op_threads) when set, else None.
    """
    environ = os.environ if environ is None else environ
    if cpu_share.INTRA_OP_VARIABLE in environ or cpu_share.INTER_OP_VARIABLE in environ:
        return None
    if strategy_name is None:
        try:
            strategy_name = gin.query_parameter("make_strategy.name")
        except ValueError:  # Not bound: the default.
            strategy_name = "mirrored"
    if strategy_name == "tpu" or tf.config.list_physical_devices("GPU"):
        return None
    intra, inter = cpu_share.training_thread_pools()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already runs: its pools are fixed.
        logging.warning("TensorFlow is already initialised; its thread pools stay as they are")
        return None
    logging.info("CPU thread pools: %d thread(s) per op, %d op(s) at once", intra, inter)
    return intra, inter
