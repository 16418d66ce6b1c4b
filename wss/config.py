"""Gin configuration: finding packaged config files and parsing them with clear errors.

`--gin_file=voc_semi.gin` resolves, in order, to a real path, to the packaged
`wss/gin_configs/` (an installed wheel), or to the repository's top-level `gin_configs/`
(an editable install or a source checkout). `include` lines inside gin files resolve the same
way because the config directories are registered as gin search paths.

Gin accepts any macro name: `NUM_CLASES = 5` when the configs read `%NUM_CLASSES` would be
ignored without a word. `parse_gin` therefore fails on a macro that a `--gin_file` or a
`--gin_bindings` sets but nothing reads (macros of included files may go unused: a config
may override the binding that reads one). `check_int`, `check_number` and `check_size` validate
values where they are read, naming the gin binding; `check_bool` and `check_choice` too.

Renamed bindings: `LEGACY_BINDINGS` maps the binding names of older versions (e.g.
`make_pseudo_labels.temperature`, now `PseudoLabelConfig.temperature`) to the current ones.
`parse_gin` rewrites them in gin files and `--gin_bindings` and logs a deprecation warning naming
both, so that the `config.gin` / `operative_config.gin` saved by older runs still parse; a
binding to a parameter of a formerly configurable function that has no new name fails naming
it. `with_overrides` builds the small frozen config objects that carry ablation switches
(`wss.method.pseudo_labels.PseudoLabelConfig`, `wss.data.augment.StrongViewConfig`).
"""

import dataclasses
import difflib
import importlib.util
import logging as std_logging
import numbers
import os
import re

import gin
from absl import logging
from gin import config_parser

# Issue 14 ("gin at the edges"): the math functions `make_pseudo_labels`, `strong_view`,
# `unlabelled_loss` and `weight_decay_loss` stopped being gin-configurable. Their knobs live in
# config objects handed to the objective and the unlabelled stream, or in `PseudoSegObjective`
# arguments. Old binding -> new binding; scopes are kept. Add a row whenever a binding is renamed.
LEGACY_BINDINGS = {
    "make_pseudo_labels.source": "PseudoLabelConfig.source",
    "make_pseudo_labels.normalize": "PseudoLabelConfig.normalize",
    "make_pseudo_labels.gamma": "PseudoLabelConfig.gamma",
    "make_pseudo_labels.temperature": "PseudoLabelConfig.temperature",
    "make_pseudo_labels.soft": "PseudoLabelConfig.soft",
    "make_pseudo_labels.threshold": "PseudoLabelConfig.threshold",
    "make_pseudo_labels.restrict_to_image_labels": "PseudoLabelConfig.restrict_to_image_labels",
    "unlabelled_loss.weight": "PseudoSegObjective.unlabelled_weight",
    "unlabelled_loss.mask_align_corners": "PseudoSegObjective.mask_align_corners",
    # Pretraining (`pretrain`) always uses DeepLab's defaults for these two.
    "weight_decay_loss.regularize_depthwise": "PseudoSegObjective.regularize_depthwise",
    "weight_decay_loss.exclude": "PseudoSegObjective.weight_decay_exclude",
    "strong_view.strength": "StrongViewConfig.strength",
    "strong_view.brightness": "StrongViewConfig.brightness",
    "strong_view.contrast": "StrongViewConfig.contrast",
    "strong_view.saturation": "StrongViewConfig.saturation",
    "strong_view.hue": "StrongViewConfig.hue",
    "strong_view.jitter_prob": "StrongViewConfig.jitter_prob",
    "strong_view.cutout_size": "StrongViewConfig.cutout_size",
    "strong_view.cutout_fill": "StrongViewConfig.cutout_fill",
    "strong_view.mean_pixel": "StrongViewConfig.mean_pixel",
    "strong_view.jit_compile": "StrongViewConfig.jit_compile",
    "strong_view.cutout_fraction": "StrongViewConfig.cutout_fraction",
}
# Names that are no longer configurables: any other parameter of theirs fails naming it.
_LEGACY_CONFIGURABLES = frozenset(old.split(".")[0] for old in LEGACY_BINDINGS)


def config_dirs():
    """Directories that hold the packaged gin configs, most specific first.

    Returns:
      A list of existing directories.
    """
    dirs = []
    spec = importlib.util.find_spec("wss.gin_configs")
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(spec.submodule_search_locations)
    repo_configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "gin_configs")
    dirs.append(repo_configs)
    seen, result = set(), []
    for d in dirs:
        d = os.path.abspath(d)
        if os.path.isdir(d) and d not in seen:
            seen.add(d)
            result.append(d)
    return result


def resolve_gin_file(name):
    """Returns the path of a gin file given as a path or as a packaged config name.

    Args:
      name: a path, or a file name such as `voc_semi.gin` (the `.gin` suffix may be omitted).

    Returns:
      An existing file path.

    Raises:
      FileNotFoundError: naming the flag value and the places searched.
    """
    if os.path.isfile(name):
        return name
    candidates = [name] if name.endswith(".gin") else [name, name + ".gin"]
    searched = []
    for directory in config_dirs():
        for candidate in candidates:
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
        searched.append(directory)
    available = sorted({f for d in config_dirs() for f in os.listdir(d) if f.endswith(".gin")})
    raise FileNotFoundError(
        f"--gin_file={name}: no such file, and no packaged config of that name in "
        f"{searched}. Packaged configs: {', '.join(available) or 'none'}")


# The first line of a config that wss writes from a run's parsed config (`dump_config`): such a
# file sets every macro its run's files set, including those a later binding left unread, so
# `parse_gin` does not ask that its macros be read.
DUMPED_CONFIG_HEADER = ("# Written by wss from a run's parsed gin config (gin.config_str()); it "
                        "keeps every macro the run set, read or not.\n")


def dump_config(path, config_text=None):
    """Writes the parsed gin config to `path` as a file that `parse_gin` reads back as it was.

    Args:
      path: the file to write (a local or `tf.io.gfile` path).
      config_text: `gin.config_str()` already taken by the caller (default: taken here).
    """
    import tensorflow as tf

    if config_text is None:
        config_text = gin.config_str()
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(DUMPED_CONFIG_HEADER + config_text)


def parse_gin(gin_files=(), gin_bindings=(), finalize=True, check_macros=True):
    """Parses gin files and bindings, turning gin's errors into ones that name the culprit.

    Args:
      gin_files: paths or packaged config names.
      gin_bindings: binding strings such as `"PseudoLabelConfig.gamma = 0.3"`.
      finalize: whether to lock the config afterwards.
      check_macros: fail on a macro set by a gin file or binding given here (not by an
        included file) that nothing reads. Off for a config saved by training, which holds
        every macro of its includes; never asked of a file `dump_config` wrote.

    Returns:
      The list of resolved gin file paths.

    Raises:
      FileNotFoundError: for a gin file that does not exist.
      ValueError: for an unknown configurable or parameter, or an unused macro (a misspelt
        name), naming the file or binding.
    """
    probe_filter = _GinIncludeProbeFilter()
    std_logging.getLogger().addFilter(probe_filter)
    try:
        return _parse_gin(gin_files, gin_bindings, finalize, check_macros)
    finally:
        std_logging.getLogger().removeFilter(probe_filter)


class _GinIncludeProbeFilter(std_logging.Filter):
    """Drops gin's `Path not found: NAME.gin` errors from probing an include as a package path.

    Gin first tries each `include 'base.gin'` as a file inside a Python package and logs an
    ERROR when it is not one (`gin.resource_reader.system_path_file_exists`), before finding it
    on the config search path. Every run printed those lines for configs that parse fine; a
    missing file still fails with gin's own error.
    """

    def filter(self, record):
        return not (record.levelno == std_logging.ERROR and record.module == "resource_reader"
                    and str(record.msg).startswith("Path not found"))


def _parse_gin(gin_files, gin_bindings, finalize, check_macros):
    """`parse_gin`'s work, without the logging filter."""
    for directory in config_dirs():
        gin.add_config_file_search_path(directory)
    paths = [resolve_gin_file(f) for f in gin_files]
    defined = {}
    for path in paths:
        where = f"--gin_file={path}"
        with open(path) as f:
            text = rename_legacy_bindings(f.read(), where)
        try:
            gin.parse_config(_NamedText(text, path))
        except (ValueError, KeyError, SyntaxError, ImportError) as e:
            raise ValueError(f"{where}: {e}{_legacy_hint(e)}") from e
        if not text.startswith(DUMPED_CONFIG_HEADER):
            for name in _macros_set(text):
                defined[name] = where
    for binding in gin_bindings:
        where = f"--gin_bindings='{binding}'"
        renamed = rename_legacy_bindings(binding, where)
        try:
            gin.parse_config(renamed)
        except (ValueError, KeyError, SyntaxError, ImportError) as e:
            raise ValueError(f"{where}: {e}{_legacy_hint(e)}") from e
        for name in _macros_set(binding):
            defined[name] = f"--gin_bindings='{binding}'"
    if check_macros:
        _check_macros_used(defined)
    if finalize:
        gin.finalize()
    return paths


class _NamedText:
    """Gin config text that gin's parser reads as the file `name` (for error locations)."""

    def __init__(self, text, name):
        self._lines = iter(text.splitlines(keepends=True))
        self.name = name

    def readline(self):
        return next(self._lines, "")


def rename_legacy_bindings(text, where="gin config"):
    """Rewrites the renamed bindings of `LEGACY_BINDINGS` in gin text, warning for each.

    Scopes are kept (`unlabelled/strong_view.cutout_size` becomes
    `unlabelled/StrongViewConfig.cutout_size`); a module-qualified old name
    (`wss.data.augment.strong_view.cutout_size`) becomes the new short name. Text that gin
    cannot parse is returned unchanged, for gin to report.

    Args:
      text: gin statements (a file's text or one `--gin_bindings` value).
      where: what the text is, for the messages (e.g. `--gin_file=PATH`).

    Returns:
      The text with every old binding name replaced by its new one.

    Raises:
      ValueError: for a binding to a parameter of a formerly configurable function that has no
        new name, naming the binding.
    """
    if not any(name in text for name in _LEGACY_CONFIGURABLES):
        return text
    try:
        statements = list(config_parser.ConfigParser(text, PlainValues()))
    except (ValueError, SyntaxError):
        return text
    lines = text.splitlines(keepends=True)
    for statement in statements:
        if not isinstance(statement, config_parser.BindingStatement) or not statement.arg_name:
            continue
        name = statement.selector.rsplit(".", 1)[-1]
        if name not in _LEGACY_CONFIGURABLES:
            continue
        scope = f"{statement.scope}/" if statement.scope else ""
        old_key = f"{scope}{statement.selector}.{statement.arg_name}"
        new = LEGACY_BINDINGS.get(f"{name}.{statement.arg_name}")
        if new is None:
            renamed = sorted(old for old in LEGACY_BINDINGS if old.startswith(name + "."))
            raise ValueError(
                f"{where}: binding {old_key}: {name} is no longer gin-configurable and its "
                f"parameter {statement.arg_name!r} has no gin binding any more (its renamed "
                f"parameters: {', '.join(LEGACY_BINDINGS[old] for old in renamed)})")
        index = statement.location.line_num - 1
        line, count = re.subn(rf"^(\s*){re.escape(old_key)}(?=\s*=)", rf"\g<1>{scope}{new}",
                              lines[index], count=1)
        if not count:
            raise ValueError(f"{where}: binding {old_key} was renamed to {scope}{new}; rename "
                             f"it there")
        lines[index] = line
        logging.warning("%s: gin binding %s is deprecated and was read as %s%s (rename it)",
                        where, old_key, scope, new)
    return "".join(lines)


def _legacy_hint(error):
    """A hint for gin's error on a formerly configurable name (in an included file)."""
    match = re.search(r"No configurable matching '(?:.*[./])?(\w+)'", str(error))
    if match and match.group(1) in _LEGACY_CONFIGURABLES:
        return (f" ({match.group(1)} is no longer gin-configurable; its bindings were renamed, "
                f"see wss.config.LEGACY_BINDINGS)")
    return ""


class PlainValues(config_parser.ParserDelegate):
    """A gin parser delegate that reads statements without resolving anything.

    References and macros become plain tuples (`('@', name, evaluate)`, `('%', name)`), so a
    parsed statement says what its text says and nothing needs to be registered.
    """

    def configurable_reference(self, scoped_selector, evaluate):
        return ("@", scoped_selector, bool(evaluate))

    def macro(self, name):
        return ("%", name)


def parse_statements(text, source):
    """The statements of gin `text`, parsed with `PlainValues` (nothing is resolved).

    Args:
      text: gin statements.
      source: what `text` is, for the error message ("gin file PATH", "--gin_bindings ...").

    Returns:
      A list of gin's parsed statements (bindings, imports, includes), in order.

    Raises:
      SyntaxError: naming `source` when gin cannot parse `text`.
    """
    try:
        return list(config_parser.ConfigParser(text, PlainValues()))
    except SyntaxError as error:
        raise SyntaxError(f"cannot parse {source}: {error}") from error


def _macros_set(text):
    """The names of the macros that a gin text sets itself (`NAME = value`)."""
    names = []
    for statement in config_parser.ConfigParser(text, PlainValues()):
        if isinstance(statement, config_parser.BindingStatement) and not statement.arg_name:
            scope, selector = statement.scope, statement.selector
            names.append(f"{scope}/{selector}" if scope else selector)
    return names


def _check_macros_used(defined):
    """Fails on a macro of `defined` (name -> where it was set) that nothing reads."""
    from gin import config as gin_config

    bindings = gin_config._CONFIG  # pylint: disable=protected-access
    macro_fn = gin_config.get_configurable(gin_config.macro)
    used = {ref.scoped_selector.rsplit("/", 1)[0]
            for ref in gin_config.iterate_references(bindings, to=macro_fn)}
    all_macros = sorted(scope for scope, selector in bindings if selector == "gin.macro")
    for name, where in defined.items():
        if name in used:
            continue
        close = difflib.get_close_matches(name, [m for m in all_macros if m != name], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"{where}: macro {name} is set but nothing reads %{name}, so it has "
                         f"no effect{hint}")


def _binding_error(binding, value, expected):
    return ValueError(f"{binding}={value!r}: expected {expected}")


def check_int(binding, value, minimum=None, maximum=None):
    """Returns `value` if it is an integer within [minimum, maximum], else fails naming it.

    Raises:
      ValueError: naming the gin binding, e.g. `train.num_steps='ten': expected an integer >=
        1`.
    """
    expected = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (
        f" <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _binding_error(binding, value, expected)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _binding_error(binding, value, expected)
    return int(value)


def check_number(binding, value, minimum=None, maximum=None, exclusive_minimum=False,
                 exclusive_maximum=False):
    """Returns `value` as a float if it is a finite number in range, else fails naming it.

    Raises:
      ValueError: naming the gin binding, e.g. `make_optimizer.base_learning_rate=-0.05:
        expected a number > 0`.
    """
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"{'<' if exclusive_maximum else '<='} {maximum}")
    expected = "a number" + (" " + " and ".join(parts) if parts else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _binding_error(binding, value, expected)
    value = float(value)
    bad = value != value or value in (float("inf"), float("-inf"))
    if minimum is not None:
        bad = bad or value < minimum or (exclusive_minimum and value == minimum)
    if maximum is not None:
        bad = bad or value > maximum or (exclusive_maximum and value == maximum)
    if bad:
        raise _binding_error(binding, value, expected)
    return value


def check_bool(binding, value):
    """Returns `value` if it is a bool, else fails naming the gin binding."""
    if not isinstance(value, bool):
        raise _binding_error(binding, value, "True or False")
    return value


def check_choice(binding, value, choices):
    """Returns `value` if it is one of `choices`, else fails naming the gin binding."""
    if not isinstance(value, str) or value not in choices:
        raise _binding_error(binding, value, f"one of {tuple(choices)}")
    return value


def with_overrides(config_class, config=None, **overrides):
    """A frozen config dataclass with some fields replaced, without gin's bindings.

    Plain functions that take a config object (`make_pseudo_labels`, `strong_view`) also take
    its fields as keyword arguments; this combines the two.

    Args:
      config_class: the dataclass (e.g. `PseudoLabelConfig`).
      config: an instance, or None for the class's own defaults (not the gin-bound values:
        gin configures the edges that build the config, not the function that reads it).
      **overrides: field values; None means "keep the config's".

    Returns:
      An instance of `config_class` (validated by its `__post_init__`).

    Raises:
      TypeError: if `config` is not a `config_class`.
    """
    if config is None:
        # Every field passed explicitly, so no gin binding of the class applies.
        fields = {f.name: f.default for f in dataclasses.fields(config_class)}
        config = config_class(**fields)
    elif not isinstance(config, config_class):
        raise TypeError(f"expected a {config_class.__name__}, got {config!r}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(config, **changes) if changes else config


def check_size(binding, value, minimum=1):
    """Returns `(height, width)` if `value` is a pair of integers >= `minimum`.

    Raises:
      ValueError: naming the gin binding.
    """
    expected = f"(height, width), two integers >= {minimum}"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _binding_error(binding, value, expected)
    try:
        return tuple(check_int(binding, v, minimum) for v in value)
    except ValueError:
        raise _binding_error(binding, value, expected) from None
