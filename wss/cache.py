"""The on-disk cache of generated datasets and pretrained checkpoints.

Things that `wss` builds on first use (the synthetic datasets, the demo's pretrained backbone)
live under one cache root, `$WSS_CACHE_DIR` or `~/.cache/wss`. `ensure_cached` builds an entry
into a temporary sibling directory and renames it into place, so an interrupted build never
leaves a half-written entry behind and concurrent builders end with one complete copy.
"""

import os
import shutil
import tempfile


def default_cache_dir():
    """The cache root: `$WSS_CACHE_DIR` if set, else `~/.cache/wss`."""
    return os.environ.get("WSS_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "wss")


def ensure_cached(name, build, marker, cache_dir=None):
    """Returns `CACHE/name`, building it with `build(directory)` when it is not complete.

    Args:
      name: the entry's directory name (it should encode every input of `build`).
      build: callable that writes the entry into the (empty) directory it is given.
      marker: a file that `build` writes last; the entry is complete when it exists.
      cache_dir: the cache root (default: `default_cache_dir()`).

    Returns:
      The entry's directory.

    Raises:
      Whatever `build` raises; nothing is left behind then.
    """
    cache_dir = cache_dir or default_cache_dir()
    final_dir = os.path.join(cache_dir, name)
    if os.path.isfile(os.path.join(final_dir, marker)):
        return final_dir
    os.makedirs(cache_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=name + ".tmp", dir=cache_dir)
    try:
        build(tmp_dir)
        if not os.path.isfile(os.path.join(tmp_dir, marker)):
            raise RuntimeError(f"building cache entry {name} wrote no {marker}")
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            # Another process finished first (its copy is equivalent), or a stale incomplete
            # entry is in the way: replace the latter.
            if os.path.isfile(os.path.join(final_dir, marker)):
                return final_dir
            shutil.rmtree(final_dir, ignore_errors=True)
            os.rename(tmp_dir, final_dir)
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir
