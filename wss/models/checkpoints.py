"""Loading DeepLab TF1 checkpoints into `DeepLabV3Plus` through an explicit name table.

Every Keras variable of the model is mapped to the name DeepLab's slim code gives it
(`xception_65/entry_flow/conv1_1/weights`, `.../BatchNorm/moving_variance`,
`aspp1_depthwise/depthwise_weights`, `decoder/feature_projection0/weights`,
`logits/semantic/biases`, PseudoSeg's classifier `xception_65/logits/weights`, ...). The
table comes from the layers themselves (`DeepLabV3Plus.tf1_variable_table`), so it always
covers every variable; `deeplab_name_table` returns it as a dict.

The checkpoint is read with `tf.train.load_checkpoint`; optimizer slots and bookkeeping
variables (`.../Momentum`, `global_step`, ...) are ignored. A shape mismatch raises a
`ValueError` naming both variables and shapes unless `skip_mismatch=True` (for example an
ImageNet checkpoint with a 1001-way `xception_65/logits`), in which case the variable keeps
its value and is reported. `skip_last_layer=True` is DeepLab's `initialize_last_layer=False`:
variables under the last-layer scopes (`logits/...` by default, DeepLab's
`last_layers_contain_logits_only=True`) are not restored whatever their shapes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, List, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf

# Checkpoint entries that are not model variables: optimizer slots and counters.
_IGNORED_PATTERNS = (
    r"(^|/)global_step$",
    r"/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1|Adagrad|ExponentialMovingAverage)$",
    r"^(beta1_power|beta2_power)$",
    r"/(biased|local_step)$",
    r"^_CHECKPOINTABLE_OBJECT_GRAPH$",
)
_IGNORED = re.compile("|".join(_IGNORED_PATTERNS))


@dataclasses.dataclass
class CheckpointReport:
    """What `load_deeplab_checkpoint` did.

    Attributes:
        path: The checkpoint prefix that was read.
        loaded: TF1 names restored into the model.
        skipped: `(tf1_name, model_shape, checkpoint_shape)` left untouched because the
            shapes differ (only with `skip_mismatch=True`).
        missing: TF1 names of model variables that the checkpoint lacks (they keep their
            initial values).
        unused: Checkpoint names that no model variable maps to (optimizer slots and
            `global_step` excluded).
        ignored: Optimizer slots and counters found in the checkpoint.
        excluded: TF1 names not restored because they are under a last-layer scope
            (`skip_last_layer=True`).
    """

    path: str
    loaded: List[str] = dataclasses.field(default_factory=list)
    skipped: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = dataclasses.field(
        default_factory=list
    )
    missing: List[str] = dataclasses.field(default_factory=list)
    unused: List[str] = dataclasses.field(default_factory=list)
    ignored: List[str] = dataclasses.field(default_factory=list)
    excluded: List[str] = dataclasses.field(default_factory=list)

    def summary(self, max_names: int = 10) -> str:
        """A readable multi-line summary.

        Args:
            max_names: How many names to list per category.

        Returns:
            The summary text.
        """
        lines = [
            f"DeepLab checkpoint {self.path}: loaded {len(self.loaded)}, skipped "
            f"{len(self.skipped)} (shape mismatch), missing {len(self.missing)}, unused "
            f"{len(self.unused)}, ignored {len(self.ignored)} (optimizer slots/counters), "
            f"excluded {len(self.excluded)} (last layers)."
        ]

        def listing(title, items):
            if not items:
                return
            lines.append(f"  {title}:")
            for item in items[:max_names]:
                lines.append(f"    {item}")
            if len(items) > max_names:
                lines.append(f"    ... and {len(items) - max_names} more")

        listing(
            "skipped",
            [f"{n}: model {list(m)} vs checkpoint {list(c)}" for n, m, c in self.skipped],
        )
        listing("missing", self.missing)
        listing("unused", self.unused)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def deeplab_name_table(model) -> Dict[str, tf.Variable]:
    """DeepLab TF1 name -> Keras variable for every variable of `model`.

    Args:
        model: A built model with `tf1_variable_table()`: a `DeepLabV3Plus` from
            `build_deeplab` or an `ImageClassifier` from `build_image_classifier`.

    Returns:
        A dict in network order.

    Raises:
        ValueError: If the model is not built or two variables map to one name.
    """
    table = {}
    pairs = model.tf1_variable_table()
    if not pairs:
        raise ValueError(f"Model {model.name} has no variables; build it first.")
    for variable, name in pairs:
        if name in table:
            raise ValueError(f"Two model variables map to the TF1 name {name!r}.")
        table[name] = variable
    # Dropout layers own integer seed-generator states; they are not DeepLab variables.
    float_variables = [v for v in model.variables if "float" in str(v.dtype)]
    unmapped = {id(v) for v in float_variables} - {id(v) for v in table.values()}
    if unmapped:
        paths = [v.path for v in float_variables if id(v) in unmapped]
        raise ValueError(f"Model variables without a TF1 name: {paths}")
    return table


def _open_checkpoint(path: str):
    """The checkpoint prefix (the newest one of a directory) and a reader of it.

    Raises:
        ValueError: If no checkpoint is found or it cannot be read.
    """
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"No checkpoint found in directory {path!r}.")
        path = latest
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as error:
        raise ValueError(f"Cannot read a TF checkpoint at {path!r}: {error}") from error
    return path, reader


def _plan_assignments(table, checkpoint_shapes, report, skip_mismatch, excluded) -> List:
    """The `(variable, tf1_name)` pairs to restore; the others are recorded in `report`.

    Args:
        table: TF1 name -> model variable (`deeplab_name_table`).
        checkpoint_shapes: TF1 name -> shape of the checkpoint's variables.
        report: The `CheckpointReport` whose `excluded`, `missing` and `skipped` are filled.
        skip_mismatch: Skip variables whose shapes differ instead of raising.
        excluded: `excluded(name)` tells whether a name is under a last-layer scope.

    Raises:
        ValueError: On a shape mismatch without `skip_mismatch`.
    """
    assignments = []
    for name, variable in table.items():
        if excluded(name):
            report.excluded.append(name)
            continue
        if name not in checkpoint_shapes:
            report.missing.append(name)
            continue
        model_shape = tuple(int(d) for d in variable.shape)
        checkpoint_shape = tuple(int(d) for d in checkpoint_shapes[name])
        if model_shape != checkpoint_shape:
            if skip_mismatch:
                report.skipped.append((name, model_shape, checkpoint_shape))
                continue
            raise ValueError(
                f"Shape mismatch for checkpoint variable {name!r} {list(checkpoint_shape)} "
                f"-> model variable {variable.path!r} {list(model_shape)} (checkpoint "
                f"{report.path!r}). Pass skip_mismatch=True to keep the model's value."
            )
        assignments.append((variable, name))
    return assignments


def _no_shared_names_message(path, checkpoint_shapes) -> str:
    """Why a checkpoint with none of the model's TF1 names cannot warm-start it."""
    sample = ", ".join(repr(name) for name in sorted(checkpoint_shapes)[:3])
    hint = ""
    if any("/.ATTRIBUTES/" in name for name in checkpoint_shapes):
        directory = os.path.dirname(path)
        hint = (" It is an object-based (TF2) checkpoint, such as a wss run's own; warm starts "
                "take DeepLab-named ones, such as the copy that `python -m wss.pretrain` "
                f"writes next to its own ({os.path.join(directory, 'tf1', 'model.ckpt')}).")
    return (f"Checkpoint {path!r} holds none of the model's DeepLab TF1 variable names "
            f"(its names begin {sample}), so nothing would be restored.{hint}")


def _record_unmapped_names(table, checkpoint_shapes, report, excluded) -> None:
    """Files the checkpoint names no variable maps to as `ignored` or `unused` in `report`."""
    for name in sorted(checkpoint_shapes):
        if name in table or excluded(name):
            continue
        if _IGNORED.search(name):
            report.ignored.append(name)
        else:
            report.unused.append(name)


@gin.configurable
def load_deeplab_checkpoint(
    model,
    path: str,
    skip_mismatch: bool = False,
    skip_last_layer: bool = False,
    last_layer_scopes: Sequence[str] = ("logits",),
) -> CheckpointReport:
    """Restores a DeepLab TF1 checkpoint into `model`.

    Args:
        model: A built `DeepLabV3Plus` (or any model with `tf1_variable_table()`).
        path: Checkpoint prefix (`.../model.ckpt-30000`) or a directory holding one.
        skip_mismatch: Leave variables whose shapes differ untouched instead of raising.
        skip_last_layer: Do not restore variables under `last_layer_scopes` (DeepLab's
            `initialize_last_layer=False`).
        last_layer_scopes: Top-level TF1 scopes of the last layers. DeepLab's default
            (`last_layers_contain_logits_only=True`) is `("logits",)`; its full list is
            `("logits", "image_pooling", "aspp", "concat_projection", "decoder")`, where
            `aspp` covers `aspp0`, `aspp1_depthwise`, ... as in slim's prefix match.

    Returns:
        A `CheckpointReport`.

    Raises:
        ValueError: On a shape mismatch without `skip_mismatch`, naming the model variable,
            the checkpoint variable and both shapes; if `path` is not a checkpoint; or if
            it holds none of the model's TF1 names (an object-based TF2 checkpoint, another
            network), which would restore nothing.
    """
    path, reader = _open_checkpoint(path)
    checkpoint_shapes = reader.get_variable_to_shape_map()
    report = CheckpointReport(path=path)
    table = deeplab_name_table(model)

    def excluded(name):
        return skip_last_layer and any(name.startswith(scope) for scope in last_layer_scopes)

    assignments = _plan_assignments(table, checkpoint_shapes, report, skip_mismatch, excluded)
    if table and not assignments and len(report.excluded) < len(table):
        if report.skipped:
            name, model_shape, checkpoint_shape = report.skipped[0]
            raise ValueError(
                f"Checkpoint {path!r}: every variable it shares with the model has another "
                f"shape ({len(report.skipped)}, e.g. {name!r}: {list(checkpoint_shape)} in the "
                f"checkpoint, {list(model_shape)} in the model), so nothing would be restored: "
                f"a network of another width or depth?")
        raise ValueError(_no_shared_names_message(path, checkpoint_shapes))
    # Read everything before assigning so that an unreadable tensor leaves the model as is.
    values = [np.asarray(reader.get_tensor(name)) for _, name in assignments]
    for (variable, name), value in zip(assignments, values):
        variable.assign(value.astype(variable.dtype))
        report.loaded.append(name)
    _record_unmapped_names(table, checkpoint_shapes, report, excluded)
    return report


def save_tf1_checkpoint(model, path: str) -> str:
    """Writes every variable of `model` under its DeepLab TF1 name, as a TF1 checkpoint.

    The result reads like DeepLab's own checkpoints: `tf.train.load_checkpoint(path)` lists
    `xception_65/entry_flow/conv1_1/weights`, ..., and `load_deeplab_checkpoint` (hence
    `train.init_checkpoint`) takes it as it takes DeepLab's ImageNet checkpoints. The data and
    index files are written under a temporary prefix and renamed into place, index last, so a
    crash never leaves a readable but incomplete checkpoint; a `checkpoint` state file next to
    it lets the directory stand for the checkpoint.

    Args:
        model: A built model with `tf1_variable_table()` (`DeepLabV3Plus`, `ImageClassifier`).
        path: Checkpoint prefix to write, e.g. `.../tf1/model.ckpt`.

    Returns:
        `path`.

    Raises:
        ValueError: If two variables map to one name or a float variable has no name.
    """
    table = deeplab_name_table(model)
    directory = os.path.dirname(os.path.abspath(path))
    tf.io.gfile.makedirs(directory)
    temp = os.path.join(directory, f".tmp-{os.path.basename(path)}-{os.getpid()}")
    names = list(table)
    tf.raw_ops.SaveV2(prefix=temp, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.convert_to_tensor(table[n]) for n in names])
    for suffix in (".data-00000-of-00001", ".index"):
        tf.io.gfile.rename(temp + suffix, path + suffix, overwrite=True)
    state = f'model_checkpoint_path: "{os.path.basename(path)}"\n'
    state_temp = os.path.join(directory, f".tmp-checkpoint-{os.getpid()}")
    with tf.io.gfile.GFile(state_temp, "w") as f:
        f.write(state + f'all_model_checkpoint_paths: "{os.path.basename(path)}"\n')
    tf.io.gfile.rename(state_temp, os.path.join(directory, "checkpoint"), overwrite=True)
    return path
