"""Gin configuration: finding packaged config files and parsing them with clear errors.

`--gin_file=voc_semi.gin` resolves, in order, to a real path, to the packaged
`wss/gin_configs/` (an installed wheel), or to the repository's top-level `gin_configs/`
(an editable install or a source checkout). `include` lines inside gin files resolve the same
way because the config directories are registered as gin search paths.

Gin accepts any macro name: `NUM_CLASES = 5` when the configs read `%NUM_CLASSES` would be
ignored without a word. `parse_gin` therefore fails on a macro that a `--gin_file` or a
`--gin_bindings` sets but nothing reads (macros of included files may go unused: a config
may override the binding that reads one). `check_int`, `check_number` and `check_size` validate
values where they are read, naming the gin binding.
"""

import difflib
import importlib.util
import numbers
import os

import gin
from gin import config_parser


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


def parse_gin(gin_files=(), gin_bindings=(), finalize=True, check_macros=True):
    """Parses gin files and bindings, turning gin's errors into ones that name the culprit.

    Args:
      gin_files: paths or packaged config names.
      gin_bindings: binding strings such as `"calibrated_fusion.gamma = 0.3"`.
      finalize: whether to lock the config afterwards.
      check_macros: fail on a macro set by a gin file or binding given here (not by an
        included file) that nothing reads. Off for a config saved by training, which holds
        every macro of its includes.

    Returns:
      The list of resolved gin file paths.

    Raises:
      FileNotFoundError: for a gin file that does not exist.
      ValueError: for an unknown configurable or parameter, or an unused macro (a misspelt
        name), naming the file or binding.
    """
    for directory in config_dirs():
        gin.add_config_file_search_path(directory)
    paths = [resolve_gin_file(f) for f in gin_files]
    defined = {}
    for path in paths:
        try:
            gin.parse_config_file(path)
        except (ValueError, KeyError, SyntaxError, ImportError) as e:
            raise ValueError(f"--gin_file={path}: {e}") from e
        with open(path) as f:
            for name in _macros_set(f.read()):
                defined[name] = f"--gin_file={path}"
    for binding in gin_bindings:
        try:
            gin.parse_config(binding)
        except (ValueError, KeyError, SyntaxError, ImportError) as e:
            raise ValueError(f"--gin_bindings='{binding}': {e}") from e
        for name in _macros_set(binding):
            defined[name] = f"--gin_bindings='{binding}'"
    if check_macros:
        _check_macros_used(defined)
    if finalize:
        gin.finalize()
    return paths


class _NoReferences:
    """A gin parser delegate that only lets the parser read statements."""

    def configurable_reference(self, scoped_selector, evaluate):
        del evaluate
        return scoped_selector

    def macro(self, name):
        return name


def _macros_set(text):
    """The names of the macros that a gin text sets itself (`NAME = value`)."""
    names = []
    for statement in config_parser.ConfigParser(text, _NoReferences()):
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
