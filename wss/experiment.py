"""One experiment's pieces that every entry point shares.

- `import_configurables()` registers every gin configurable of the package, so that a saved
  `config.gin` parses in `wss.evaluate` and `wss.export` as it did in `wss.train`.
- `parse_experiment_config()` reads `--gin_file`s, or the `config.gin` that training saved in
  its log directory.
- `build_models()` builds the DeepLab model and the SGC head from gin bindings.
- `checkpoint_objects()` / `make_checkpoint()` / `restore_models()` define the checkpoint
  layout (`model`, `random_states`, `sgc_head`, `optimizer`).
"""

import hashlib
import importlib
import os
import subprocess
import sys

import gin
import keras
import tensorflow as tf
from absl import logging
from gin import config_parser

from wss import config as config_lib
from wss.training.loop import CONFIG_FILENAME, OPERATIVE_CONFIG_FILENAME  # noqa: F401

# Modules that define gin configurables; imported before any gin file is parsed.
_CONFIGURABLE_MODULES = (
    "wss.models",
    "wss.models.checkpoints",
    "wss.method.sgc",
    "wss.method.pseudo_labels",
    "wss.data.pipeline",
    "wss.data.synthetic",
    "wss.training.optim",
    "wss.training.strategy",
    "wss.method.objective",
    "wss.method.self_training",
    "wss.method.teacher_stage",
    "wss.experiment",
    "wss.training.trainer",
    "wss.tasks.pretraining",
    "wss.evaluation.evaluator",
    "wss.data.augment",
    "wss.data.folder",
    "wss.data.hygiene",
    "wss.data.tfds_source",
)


def import_configurables():
    """Imports every module that registers gin configurables."""
    for name in _CONFIGURABLE_MODULES:
        importlib.import_module(name)


# Configurable values usable in gin files, e.g. `DATA_DIR = @synthetic_dataset_dir()`.
@gin.configurable
def synthetic_dataset_dir(seed=0, num_train=None, num_val=None, variant="shapes"):
    """A built-in synthetic dataset's directory, generated on first use (gin helper).

    Args:
      seed: generator seed.
      num_train: train images (None: the variant's default).
      num_val: validation images (None: the variant's default).
      variant: `shapes` (the demo's), `random_colours` or `held_out` (see `wss.data.synthetic`).

    Returns:
      The dataset directory.
    """
    from wss.data import synthetic

    return synthetic.ensure_synthetic_dataset(seed=seed, num_train=num_train, num_val=num_val,
                                              variant=variant)


@gin.configurable
def synthetic_classification_dir(seed=0, num_train=8000, num_val=500):
    """The built-in classification set's directory, generated on first use (gin helper).

    Args:
      seed: generator seed.
      num_train: train images.
      num_val: validation images.

    Returns:
      The dataset directory (see `wss.data.synthetic_classification`).
    """
    from wss.data import synthetic_classification

    return synthetic_classification.ensure_classification_dataset(
        seed=seed, num_train=num_train, num_val=num_val)


def _gin_statements(gin_file, seen=None):
    """The statements of a gin file and of every file it includes, recursively, in order.

    Each statement is its `repr` without its location, so comments, blank lines, line breaks
    and spacing do not change the result; what a binding says does.

    Raises:
      SyntaxError: naming the file that gin cannot parse.
    """
    seen = set() if seen is None else seen
    path = os.path.realpath(config_lib.resolve_gin_file(gin_file))
    if path in seen:
        return []
    seen.add(path)
    with open(path) as f:
        text = f.read()
    return _parsed_statements(text, f"gin file {path}", seen)


def _parsed_statements(text, source, seen):
    """The statements of gin `text`, includes followed (see `_gin_statements`).

    Args:
      text: gin statements.
      source: what `text` is, for the error message ("gin file PATH", "--gin_bindings ...").
      seen: real paths of the files already read, which are not read again.

    Returns:
      A list of `repr`s of the statements without their locations.

    Raises:
      SyntaxError: naming `source` when gin cannot parse `text`.
    """
    statements = []
    for statement in config_lib.parse_statements(text, source):
        if isinstance(statement, config_parser.IncludeStatement):
            statements.extend(_gin_statements(statement.filename, seen))
        else:
            statements.append(repr(statement._replace(location=None)))
    return statements


def pretraining_cache_name(gin_file, gin_bindings=()):
    """The cache entry name of the pretraining that `gin_file` and `gin_bindings` describe.

    The name hashes everything the pretrained weights depend on that is known before the run:
    the config's statements with those of every file it includes and the bindings' (parsed, so
    a comment, a line break or spacing does not pretrain anew; a changed value does), the `wss`
    version and the version of the built-in classification set's generator. The generator's version
    is in it because a config names that set through `@synthetic_classification_dir()`, whose
    text does not change when the images do: a new generator then pretrains anew instead of
    returning a backbone trained on the old images.

    Args:
      gin_file: the pretraining config (a path or a packaged config name).
      gin_bindings: extra bindings for the pretraining run.

    Returns:
      `pretrained_<config stem>_<12 hex digits>`.
    """
    import wss
    from wss.data import synthetic_classification

    seen = set()
    statements = _gin_statements(gin_file, seen)
    for binding in gin_bindings:
        statements += _parsed_statements(binding, f"--gin_bindings {binding!r}", seen)
    digest = hashlib.sha256()
    for text in statements + [
            wss.__version__, f"synthetic_classification v{synthetic_classification.VERSION}"]:
        digest.update(text.encode() + b"\0")
    stem = os.path.splitext(os.path.basename(gin_file))[0]
    return f"pretrained_{stem}_{digest.hexdigest()[:12]}"


@gin.configurable
def pretrained_checkpoint(gin_file="pretrain_demo.gin", gin_bindings=(), cache_dir=None,
                          name_only=False):
    """A backbone pretrained by `python -m wss.pretrain`, run once and cached (gin helper).

    `train.init_checkpoint = @pretrained_checkpoint` makes a training config start from the
    pretraining that `gin_file` describes; without parentheses gin passes the function, which
    the run calls only when it warm-starts (after its split checks, never on resume), while
    `@pretrained_checkpoint()` is resolved when `train` is called. The first call runs
    `python -m wss.pretrain` in a subprocess (its progress is printed) into the cache
    (`wss.cache`); later calls, from any config with the same pretraining, return the cached
    checkpoint. The cache entry is named by
    `pretraining_cache_name`.

    Args:
      gin_file: the pretraining config (a path or a packaged config name).
      gin_bindings: extra bindings for the pretraining run.
      cache_dir: the cache root (default: `wss.cache.default_cache_dir()`).
      name_only: return the cache entry's name without running or reading anything (what the
        teacher stage's cache key knows of this warm start).

    Returns:
      The TF1-named checkpoint prefix (`.../tf1/model.ckpt`), or with `name_only` the cache
      entry's name (`pretraining_cache_name`).

    Raises:
      RuntimeError: if the pretraining run fails (its output says why).
    """
    from wss import cache

    name = pretraining_cache_name(gin_file, gin_bindings)
    if name_only:
        return name
    final_dir = cache.entry_dir(name, cache_dir)
    built = []

    def build(directory):
        command = [sys.executable, "-m", "wss.pretrain", f"--gin_file={gin_file}",
                   f"--logdir={directory}"] + [f"--gin_bindings={b}" for b in gin_bindings]
        print(f"Pretraining ({gin_file}) once, in {directory}; when it finishes it is moved "
              f"to the cache as {final_dir}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            raise RuntimeError(f"pretraining failed: {' '.join(command)}")
        built.append(directory)

    directory = cache.ensure_cached(name, build, marker=os.path.join("tf1", "model.ckpt.index"),
                                    cache_dir=cache_dir)
    checkpoint = os.path.join(directory, "tf1", "model.ckpt")
    if built:  # The pretraining printed paths in its temporary directory, gone now.
        print(f"Pretrained checkpoint, cached: {checkpoint}", flush=True)
    return checkpoint


@gin.configurable
def join_path(directory, name):
    """`os.path.join` for gin files: `@join_path(%DATA_DIR, 'train-*.tfrecord')`."""
    return os.path.join(directory, name)


def parse_experiment_config(checkpoint_dir=None, gin_files=(), gin_bindings=(),
                            finalize=True):
    """Parses the experiment's gin config.

    Args:
      checkpoint_dir: a training log directory; its saved `config.gin` is used when no gin file
        is given.
      gin_files: gin file paths or packaged config names.
      gin_bindings: extra bindings, applied last.
      finalize: lock the config afterwards.

    Returns:
      The list of parsed gin files.

    Raises:
      FileNotFoundError: when neither gin files nor a saved config exist.
    """
    import_configurables()
    gin.clear_config()
    gin_files = list(gin_files)
    if not gin_files:
        if checkpoint_dir is None:
            raise FileNotFoundError("no --gin_file given and no --checkpoint_dir to read one from")
        saved = os.path.join(
            checkpoint_dir if tf.io.gfile.isdir(checkpoint_dir) else os.path.dirname(
                checkpoint_dir), CONFIG_FILENAME)
        if not tf.io.gfile.exists(saved):
            raise FileNotFoundError(
                f"no --gin_file given and --checkpoint_dir={checkpoint_dir} has no "
                f"{CONFIG_FILENAME}; pass the experiment's --gin_file")
        gin_files = [saved]
        # A saved config holds every macro of its includes, used or not.
        return config_lib.parse_gin(gin_files, gin_bindings, finalize=finalize,
                                    check_macros=False)
    return config_lib.parse_gin(gin_files, gin_bindings, finalize=finalize)


@gin.configurable
def build_models(num_classes=gin.REQUIRED, with_sgc_head=True, image_size=(65, 65)):
    """Builds the DeepLab model and (optionally) the SGC head, both ready to use.

    Model options other than `num_classes` come from gin bindings of `build_deeplab`; SGC
    options from bindings of `make_sgc_head`. Call inside `strategy.scope()` when training.

    Args:
      num_classes: classes including background (bind `build_models.num_classes`).
      with_sgc_head: also build the SGC head.
      image_size: the dummy input size used to build the SGC head's variables.

    Returns:
      (model, sgc_head or None).
    """
    from wss.method import sgc
    from wss.models import build_deeplab

    model = build_deeplab(num_classes=num_classes)
    sgc_head = None
    if with_sgc_head:
        sgc_head = sgc.make_sgc_head(num_classes)
        dummy = tf.zeros([1, image_size[0], image_size[1], 3], tf.float32)
        outputs = model(dummy, training=False)
        features = outputs["features"]
        sgc.sgc_logits(sgc_head, features["final"], features["penultimate"],
                       tf.zeros([1, num_classes - 1]), valid=tf.ones(dummy.shape[:3]),
                       classifier_kernel=model.classifier_kernel, training=False,
                       low_level_features=features.get("low_level"))
    return model, sgc_head


def _seed_generator_states(model):
    """The state variables of the model's Keras random seed generators (dropout).

    Keras tracks them outside `model.variables`, so a checkpoint names them explicitly: a
    resumed run then draws the same dropout masks as an uninterrupted one.
    """
    states, seen = [], set()
    for layer in model._flatten_layers(include_self=True):
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and id(value) not in seen:
                seen.add(id(value))
                states.append(value.state)
    return states


class VariableStore(tf.Module):
    """Every variable of a Keras model, tracked by its Keras path for `tf.train.Checkpoint`.

    Keras 3 layers held in Python lists are not dependencies of the model in TensorFlow's
    object graph, so `tf.train.Checkpoint(model=model)` would silently miss their variables
    (BatchNorm statistics included). Checkpoints therefore name each variable explicitly.

    Args:
      layer: a built Keras layer or model.

    Raises:
      ValueError: if two variables share a path.
    """

    def __init__(self, layer):
        super().__init__(name=None)
        # Seed generator states have process-global names; `random_states` holds them.
        skip = {id(v) for v in _seed_generator_states(layer)}
        by_path = {}
        for variable in layer.variables:
            if id(variable) in skip:
                continue
            if variable.path in by_path:
                raise ValueError(f"two variables of {layer.name} share the path {variable.path}")
            by_path[variable.path] = variable
        self.by_path = by_path


def checkpoint_objects(model, sgc_head=None):
    """The trackables of a checkpoint's model part: `model`, `random_states`, `sgc_head`.

    Args:
      model: a Keras model (the DeepLab model, or the pretraining classifier).
      sgc_head: the SGC head, or None.

    Returns:
      A dict for `tf.train.Checkpoint(**objects)`.
    """
    objects = {"model": VariableStore(model), "random_states": _seed_generator_states(model)}
    if sgc_head is not None:
        objects["sgc_head"] = VariableStore(sgc_head)
    return objects


def make_checkpoint(model, sgc_head=None, optimizer=None):
    """The checkpoint layout shared by training, evaluation and export.

    Args:
      model: the DeepLab model.
      sgc_head: the SGC head, or None.
      optimizer: the optimizer, or None.

    Returns:
      A `tf.train.Checkpoint`.
    """
    objects = checkpoint_objects(model, sgc_head)
    if optimizer is not None:
        objects["optimizer"] = optimizer
    return tf.train.Checkpoint(**objects)


def latest_checkpoint_path(checkpoint_dir_or_path):
    """Resolves a log directory or a checkpoint prefix to a checkpoint prefix.

    A directory resolves to its newest checkpoint that reads in full: a truncated or corrupt
    newer one is reported and skipped (`wss.training.checkpointing`).

    Raises:
      FileNotFoundError: naming the directory when it holds no checkpoint.
      wss.training.checkpointing.CheckpointError: when none of its checkpoints is intact.
    """
    from wss.training import checkpointing

    if tf.io.gfile.isdir(checkpoint_dir_or_path):
        path = checkpointing.newest_intact_checkpoint(checkpoint_dir_or_path, set_aside=False)
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {checkpoint_dir_or_path}")
        return path
    if tf.io.gfile.exists(checkpoint_dir_or_path + ".index"):
        return checkpoint_dir_or_path
    raise FileNotFoundError(f"{checkpoint_dir_or_path} is neither a checkpoint directory nor "
                            "a checkpoint path")


def restore_models(checkpoint_dir_or_path, model, sgc_head=None):
    """Restores model weights (and the SGC head) for inference; optimizer state is skipped.

    Args:
      checkpoint_dir_or_path: a log directory (latest checkpoint) or a checkpoint prefix.
      model: the built model.
      sgc_head: the built SGC head, or None.

    Returns:
      The checkpoint path that was restored.

    Raises:
      wss.training.checkpointing.CheckpointError: naming a checkpoint that cannot be read.
      wss.training.checkpointing.CheckpointMismatchError: when the checkpoint was written by
        another configuration (other variables or shapes).
    """
    from wss.training import checkpointing

    path = latest_checkpoint_path(checkpoint_dir_or_path)
    hint = f"see {os.path.join(os.path.dirname(path), CONFIG_FILENAME)}"
    checkpointing.restore_checkpoint(make_checkpoint(model, sgc_head), path, config_hint=hint,
                                     partial=True)
    logging.info("Restored %s", path)
    return path
