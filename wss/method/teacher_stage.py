"""The supervised teacher stage: a frozen teacher for PseudoSeg, trained once and cached.

`train.teacher_checkpoint = @supervised_teacher` (without parentheses) with
`train.ema_teacher_decay = 1.0` makes a semi (or weak) run take its online pseudo labels from a
frozen supervised model of the same data, seed and model: before the run trains, the teacher
stage trains that model with this run's own config in `train.mode = 'supervised'` (in a
`python -m wss.train` subprocess whose progress is printed) into the cache (`wss.cache`), and
later runs with the same teacher reuse it. This is `demo.gin`'s recipe (an extension of the
paper's one-stage loop; the README says why and what it measured).

The cache entry is named by `teacher_cache_name`: a hash of the teacher's config (this run's
gin bindings with the supervised overrides below, less the bindings a supervised run does not
read), of the labelled data's files, of the warm start the config names (`init_fingerprint`:
the pretraining's own cache name, or the checkpoint's files, so a changed pretraining config or
a rewritten checkpoint trains a new teacher) and of the `wss` version. A supervised run with
the same bindings (`demo_supervised.gin` with the same `--gin_bindings`) trains the same teacher:
with `train.share_as_teacher = True` (demo configs) it adds its final checkpoint to the cache, so
that running the supervised baseline first makes the PseudoSeg run's teacher stage free.
"""

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys

import gin
import tensorflow as tf
from gin import config_parser

from wss import cache
from wss import config as config_lib
from wss.training import rundir

# The bindings that make a run's config its supervised teacher's.
TEACHER_OVERRIDES = (
    "train.mode = 'supervised'",
    "train.teacher_checkpoint = None",
    "train.ema_teacher_decay = 0.0",
    "train.share_as_teacher = False",
    "train.offline_pseudo_labels = False",
    "after_training.export = False",
)

# Bindings that do not change a supervised run's final weights, left out of the cache key so
# that a semi run and the supervised run of the same data share one teacher: the unlabelled
# stream and its pseudo labels, logging, checkpoint cadence, evaluation and export. A binding
# not listed here is in the key (so an unlisted one that does not matter only costs a retrain).
_KEY_IGNORES_CONFIGURABLES = frozenset({
    "PseudoLabelConfig", "StrongViewConfig", "unlabelled_dataset", "after_training",
    "evaluate_checkpoint", "offline_pseudo_labels", "crop_classifier",
    # Its own settings reach the key through `teacher_overrides` (its steps) or change nothing.
    "supervised_teacher"})
_KEY_IGNORES_SCOPES = frozenset({"unlabelled", "unlabelled_split", "val"})
_KEY_IGNORES_PARAMETERS = frozenset({
    ("train", "unlabelled_batch_size"), ("train", "unlabelled_pattern"),
    ("train", "unlabelled_split"), ("train", "log_every"), ("train", "summary_every"),
    ("train", "image_summary_every"), ("train", "checkpoint_every"), ("train", "max_to_keep"),
    ("train", "share_as_teacher"), ("PseudoSegObjective", "unlabelled_weight"),
    ("PseudoSegObjective", "teacher_mirror"), ("PseudoSegObjective", "offline_label_resolution"),
    ("PseudoSegObjective", "offline_image_labels"),
    ("train", "offline_pseudo_labels")})

_MARKER = "teacher.json"


def teacher_overrides(num_steps=None):
    """The bindings that make a run's config its teacher's: `TEACHER_OVERRIDES` and its steps.

    Args:
      num_steps: the teacher's `train.num_steps` (`supervised_teacher.num_steps`), or None
        for the run's own.

    Returns:
      A tuple of gin binding strings.

    Raises:
      ValueError: naming `supervised_teacher.num_steps` unless it is None or a positive int.
    """
    if num_steps is None:
        return TEACHER_OVERRIDES
    config_lib.check_int("supervised_teacher.num_steps", num_steps, minimum=1)
    return TEACHER_OVERRIDES + (f"train.num_steps = {int(num_steps)}",)


def _statements(text, source):
    """{(scope, configurable, parameter): repr(value)} of gin `text`, the last binding winning.

    Raises:
      SyntaxError: naming `source` when gin cannot parse `text`.
    """
    bindings = {}
    for statement in config_lib.parse_statements(text, source):
        if isinstance(statement, config_parser.BindingStatement):
            configurable = statement.selector.rsplit(".", 1)[-1]
            bindings[(statement.scope or "", configurable, statement.arg_name)] = repr(
                statement.value)
    return bindings


def _in_key(scope, configurable, parameter):
    scopes = set(scope.split("/")) if scope else set()
    return not (configurable in _KEY_IGNORES_CONFIGURABLES
                or scopes & _KEY_IGNORES_SCOPES
                or (configurable, parameter) in _KEY_IGNORES_PARAMETERS)


def _file_stats(pattern):
    """Each file matching `pattern`: its absolute path, size and modification time."""
    lines = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        stat = tf.io.gfile.stat(path)
        lines.append(f"{os.path.abspath(path)} {stat.length} {stat.mtime_nsec}")
    return lines


def data_fingerprint(labelled_pattern, labelled_split):
    """What the teacher's cache key knows of its labelled data.

    Args:
      labelled_pattern: the labelled TFRecords' pattern (`train.labelled_pattern`), or a source
        object (its `repr` is used).
      labelled_split: the split file (`train.labelled_split`) or None.

    Returns:
      A list of strings: each TFRecord's path, size and modification time and the split
      file's path and SHA-256 (so data rewritten in place trains a new teacher).
    """
    if not isinstance(labelled_pattern, str):
        return [repr(labelled_pattern), repr(labelled_split)]
    parts = _file_stats(labelled_pattern)
    if labelled_split:
        with tf.io.gfile.GFile(labelled_split, "rb") as f:
            parts.append(f"{os.path.abspath(labelled_split)} "
                         f"{hashlib.sha256(f.read()).hexdigest()}")
    return parts


def init_fingerprint(init_checkpoint):
    """What the teacher's cache key knows of the warm start (`train.init_checkpoint`).

    The config's text names the warm start but not its weights: `@pretrained_checkpoint` stays
    the same text when `pretrain_demo.gin` changes, and a checkpoint path when its files are
    rewritten. Without this a teacher trained from the old weights would be reused.

    Args:
      init_checkpoint: the run's `train.init_checkpoint`: None, a checkpoint path, or a callable
        that returns one (`wss.experiment.pretrained_checkpoint`, asked for its cache entry's
        name with `name_only=True`, which runs nothing; another callable is known by its name).

    Returns:
      A list of strings: for a path, each of its files' path, size and modification time.
    """
    if not init_checkpoint:
        return ["init: none"]
    if callable(init_checkpoint):
        if "name_only" in inspect.signature(init_checkpoint).parameters:
            return [f"init: {init_checkpoint(name_only=True)}"]
        return [f"init: {getattr(init_checkpoint, '__qualname__', repr(init_checkpoint))}"]
    return [f"init: {os.path.abspath(init_checkpoint)}"] + _file_stats(init_checkpoint + "*")


def teacher_cache_name(config_text, fingerprint, overrides=TEACHER_OVERRIDES):
    """The cache entry name of the supervised teacher of the run whose config is `config_text`.

    Args:
      config_text: the run's gin config (`gin.config_str()`), in any mode.
      fingerprint: `data_fingerprint(...)` of its labelled data and `init_fingerprint(...)` of
        its warm start.
      overrides: the bindings that make the config the teacher's (`teacher_overrides`).

    Returns:
      `teacher_<12 hex digits>`: equal for a semi run and the supervised run that differs from
      it only in `overrides` and in bindings left out of the key.
    """
    import wss

    bindings = _statements(config_text, "the run's gin config")
    bindings.update(_statements("\n".join(overrides), "the teacher overrides"))
    digest = hashlib.sha256()
    for key in sorted(k for k in bindings if _in_key(*k)):
        digest.update(f"{key} = {bindings[key]}".encode() + b"\0")
    for text in list(fingerprint) + [wss.__version__]:
        digest.update(text.encode() + b"\0")
    return f"teacher_{digest.hexdigest()[:12]}"


def _run_cache_name(config_text, labelled_pattern, labelled_split, init_checkpoint,
                    overrides=TEACHER_OVERRIDES):
    """`teacher_cache_name` of a run with this config, labelled data and warm start."""
    return teacher_cache_name(config_text, data_fingerprint(labelled_pattern, labelled_split)
                              + init_fingerprint(init_checkpoint), overrides)


@gin.configurable
def supervised_teacher(labelled_pattern, labelled_split, init_checkpoint=None, cache_dir=None,
                       num_steps=None):
    """Trains this run's supervised teacher once (cached) and returns its directory.

    Bound without parentheses (`train.teacher_checkpoint = @supervised_teacher`): the run's
    task calls it with its labelled data after the split checks (`SegmentationTask.prepare`).

    Args:
      labelled_pattern: the run's `train.labelled_pattern`.
      labelled_split: the run's `train.labelled_split`.
      init_checkpoint: the run's `train.init_checkpoint` (passed by `wss.train`), for the key.
      cache_dir: the cache root (default: `wss.cache.default_cache_dir()`).
      num_steps: the teacher's own `train.num_steps` (its poly schedule too), or None for the
        run's. A supervised run shares its checkpoint with this stage (`train.share_as_teacher`)
        when it trains that many steps (`demo_supervised.gin` with `train.num_steps` bound to
        it).

    Returns:
      The cached teacher's log directory (its final checkpoint is the teacher).

    Raises:
      RuntimeError: if the teacher's training fails (its output, printed above, says why).
      ValueError: naming `supervised_teacher.num_steps` unless it is None or a positive int.
    """
    overrides = teacher_overrides(num_steps)
    config_text = gin.config_str()
    name = _run_cache_name(config_text, labelled_pattern, labelled_split, init_checkpoint,
                           overrides)
    final_dir = cache.entry_dir(name, cache_dir)
    built = []

    def build(directory):
        config_path = os.path.join(directory, "teacher_stage.gin")
        config_lib.dump_config(config_path, config_text)  # The text the key hashed.
        command = ([sys.executable, "-m", "wss.train", f"--gin_file={config_path}",
                    f"--logdir={directory}"]
                   + [f"--gin_bindings={binding}" for binding in overrides])
        steps = "" if num_steps is None else f" for {int(num_steps)} steps"
        print(f"Supervised teacher stage: training this run's config in train.mode="
              f"'supervised'{steps} once, in {directory}; when it finishes it is moved to the "
              f"cache as {final_dir}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            raise RuntimeError(f"the supervised teacher stage failed: {' '.join(command)}")
        _write_marker(directory, source="teacher stage")
        built.append(directory)

    directory = cache.ensure_cached(name, build, marker=_MARKER, cache_dir=cache_dir)
    if built:
        print(f"Supervised teacher, cached: {directory}", flush=True)
    else:
        print(f"Supervised teacher from the cache: {directory} ({_describe(directory)})",
              flush=True)
    return directory


def share_supervised_run(logdir, labelled_pattern, labelled_split, init_checkpoint=None,
                         cache_dir=None):
    """Adds a finished supervised run's final checkpoint to the cache as a teacher.

    Called by `train` after a supervised run with `train.share_as_teacher = True`. An entry
    already cached is left as it is.

    Args:
      logdir: the supervised run's log directory.
      labelled_pattern, labelled_split: its labelled data.
      init_checkpoint: its `train.init_checkpoint`.
      cache_dir: the cache root (default: `wss.cache.default_cache_dir()`).

    Returns:
      The cache entry's directory.
    """
    from wss import experiment
    from wss.training import checkpointing

    name = _run_cache_name(gin.config_str(), labelled_pattern, labelled_split, init_checkpoint)
    checkpoint = experiment.latest_checkpoint_path(logdir)

    def build(directory):
        for path in tf.io.gfile.glob(checkpoint + ".*"):
            shutil.copy(path, directory)
        checkpointing.write_checkpoint_index(
            directory, [os.path.join(directory, os.path.basename(checkpoint))])
        _write_marker(directory, source=os.path.abspath(logdir))

    directory = cache.ensure_cached(name, build, marker=_MARKER, cache_dir=cache_dir)
    print(f"Cached as the supervised teacher of PseudoSeg runs with the same bindings: "
          f"{directory}", flush=True)
    return directory


def _write_marker(directory, source):
    rundir.write_atomic(os.path.join(directory, _MARKER), json.dumps({
        "source": source,
        "checkpoint": os.path.basename(tf.train.latest_checkpoint(directory) or "")}))


def _describe(directory):
    try:
        with open(os.path.join(directory, _MARKER)) as f:
            return f"from {json.load(f)['source']}"
    except (OSError, ValueError, KeyError):
        return "no record of its source"
