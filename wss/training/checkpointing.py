"""Checkpoints that can be trusted: intact ones found, broken ones set aside, mismatches named.

* `verify_checkpoint(path)` reads every tensor of a checkpoint (TensorFlow checks each one's
  CRC32C), so a `.data` file cut short or corrupted fails here, naming the checkpoint, rather
  than in the middle of a restore.
* `newest_intact_checkpoint(directory)` is what a run resumes from: the newest checkpoint of
  the directory's `checkpoint` index that verifies. Broken newer ones are moved to
  `DIRECTORY/corrupt/` and dropped from the index, and the fallback is printed.
* `restore_checkpoint(checkpoint, path)` restores and checks that the checkpoint and the
  objects correspond one to one, so that a checkpoint written under another configuration
  (another backbone, width, number of classes) fails with a `CheckpointMismatchError` that
  says so, not on the shape of some optimizer slot.
"""

import os
import re

import tensorflow as tf
from absl import logging

CORRUPT_DIRNAME = "corrupt"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read (truncated, corrupt or missing files)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not hold the variables of the model being restored."""


def _short(error):
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0][:300]


def checkpoint_step(path):
    """The step of a `.../ckpt-N` checkpoint path (-1 when it has no number)."""
    match = re.search(r"-(\d+)$", path or "")
    return int(match.group(1)) if match else -1


def verify_checkpoint(path):
    """Reads every tensor of the checkpoint at `path` (a prefix such as `LOGDIR/ckpt-4`).

    Raises:
      CheckpointError: naming `path` when its index or data cannot be read in full.
    """
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # The reader raises OpErrors, IndexError, ValueError...
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: "
                              f"{_short(error)}") from None


def listed_checkpoints(directory):
    """The checkpoints of a directory's `checkpoint` index file, newest first."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    # get_checkpoint_state already puts `directory` in front of relative entries.
    return sorted(set(paths), key=checkpoint_step, reverse=True)


def _set_aside(directory, path):
    """Moves a broken checkpoint's files to `directory/corrupt/`; returns where."""
    target = os.path.join(directory, CORRUPT_DIRNAME)
    tf.io.gfile.makedirs(target)
    for name in tf.io.gfile.glob(path + ".*"):
        tf.io.gfile.rename(name, os.path.join(target, os.path.basename(name)), overwrite=True)
    return target


def newest_intact_checkpoint(directory, set_aside=True):
    """The newest checkpoint of `directory` that reads in full, or None if it has none.

    Broken newer checkpoints are reported and, with `set_aside`, moved to
    `directory/corrupt/` and removed from the `checkpoint` index, so that later runs and tools
    see only intact ones (call it only while holding the directory's lock).

    Raises:
      CheckpointError: when the directory lists checkpoints and none of them is intact.
    """
    candidates = listed_checkpoints(directory)
    broken = []
    for path in candidates:
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            broken.append((path, error))
            continue
        if broken:
            names = ", ".join(os.path.basename(p) for p, _ in broken)
            print(f"WARNING: {broken[0][1]}. Falling back to the newest intact checkpoint, "
                  f"{path} (unusable: {names}).", flush=True)
            if set_aside:
                _drop(directory, broken, [p for p in candidates if p not in dict(broken)])
        return path
    if broken:
        if set_aside:
            _drop(directory, broken, [])
        raise CheckpointError(
            f"no intact checkpoint in {directory}: {'; '.join(str(e) for _, e in broken)}"
            + (f". They were moved to {os.path.join(directory, CORRUPT_DIRNAME)}; rerun to "
               "start from scratch" if set_aside else ""))
    return None


def write_checkpoint_index(directory, paths):
    """Writes `directory/checkpoint`, the index that lists `paths` (oldest first) and names the
    last the latest, as `tf.train.CheckpointManager` writes it: relative paths, replaced
    atomically.

    Args:
      directory: the checkpoints' directory.
      paths: checkpoint prefixes in `directory`, oldest first (at least one).
    """
    from tensorflow.python.checkpoint import checkpoint_management

    checkpoint_management.update_checkpoint_state_internal(
        directory, paths[-1], all_model_checkpoint_paths=list(paths), save_relative_paths=True)


def _drop(directory, broken, keep):
    target = None
    for path, _ in broken:
        target = _set_aside(directory, path)
    keep = sorted(keep, key=checkpoint_step)
    if keep:
        write_checkpoint_index(directory, keep)
    else:
        tf.io.gfile.remove(os.path.join(directory, "checkpoint"))
    logging.warning("Moved broken checkpoints of %s to %s", directory, target)


def restore_checkpoint(checkpoint, path, config_hint=None, partial=False):
    """Restores `checkpoint` (a `tf.train.Checkpoint`) from `path`, checking the match.

    Args:
      checkpoint: the checkpoint object of the run.
      path: the checkpoint prefix.
      config_hint: where the configuration that wrote `path` can be found (for the error).
      partial: allow values in the checkpoint that nothing restores (inference restores skip
        the optimizer); every object of `checkpoint` must still be found.

    Returns:
      The restore status.

    Raises:
      CheckpointError: when the files cannot be read.
      CheckpointMismatchError: when the checkpoint holds other variables or shapes.
    """
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
            status.assert_existing_objects_matched()
        else:
            status.assert_consumed()
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.NotFoundError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {_short(e)}") from None
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
        hint = f" ({config_hint})" if config_hint else ""
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit this model: it was written by another "
            f"configuration{hint}. Train into a new --logdir, or use the configuration that "
            f"wrote it. Details: {_short(e)}") from None
    return status
