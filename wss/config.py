"""Gin configuration: finding packaged config files and parsing them with clear errors.

`--gin_file=voc_semi.gin` resolves, in order, to a real path, to the packaged
`wss/gin_configs/` (an installed wheel), or to the repository's top-level `gin_configs/`
(an editable install or a source checkout). `include` lines inside gin files resolve the same
way because the config directories are registered as gin search paths.
"""

import importlib.util
import os

import gin


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


def parse_gin(gin_files=(), gin_bindings=(), finalize=True):
    """Parses gin files and bindings, turning gin's errors into ones that name the culprit.

    Args:
      gin_files: paths or packaged config names.
      gin_bindings: binding strings such as `"calibrated_fusion.gamma = 0.3"`.
      finalize: whether to lock the config afterwards.

    Returns:
      The list of resolved gin file paths.

    Raises:
      FileNotFoundError: for a gin file that does not exist.
      ValueError: for an unknown configurable or parameter, naming the file or binding.
    """
    for directory in config_dirs():
        gin.add_config_file_search_path(directory)
    paths = [resolve_gin_file(f) for f in gin_files]
    for path in paths:
        try:
            gin.parse_config_file(path)
        except (ValueError, KeyError, SyntaxError, ImportError) as e:
            raise ValueError(f"--gin_file={path}: {e}") from e
    for binding in gin_bindings:
        try:
            gin.parse_config(binding)
        except (ValueError, KeyError, SyntaxError, ImportError) as e:
            raise ValueError(f"--gin_bindings='{binding}': {e}") from e
    if finalize:
        gin.finalize()
    return paths
