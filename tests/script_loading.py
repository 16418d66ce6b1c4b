"""Loads the repository's scripts (benchmarks/, datasets/, launch/) as modules for tests.

The scripts are run by path (`python benchmarks/reference_cnn.py ...`) and are not part of the
`wss` package, so tests import them from their files.
"""

import importlib.util
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def load_script(relative_path, name=None):
    """Executes a script of the repository as a fresh module and returns it.

    Args:
      relative_path: the script's path from the repository root, e.g.
        `"benchmarks/reference_cnn.py"`.
      name: the module's name (default: the file name without `.py`).

    Returns:
      The module; its `if __name__ == "__main__"` block does not run.

    Raises:
      FileNotFoundError: naming the missing script.
    """
    path = os.path.join(REPO, relative_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no script {path}")
    name = name or os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
