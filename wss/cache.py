"""The on-disk cache of generated datasets and pretrained checkpoints.

Things that `wss` builds on first use (the synthetic datasets, the demo's pretrained backbone)
live under one cache root, `$WSS_CACHE_DIR` or `~/.cache/wss`. `ensure_cached` builds an entry
into a temporary sibling directory and renames it into place, so an interrupted build never
leaves a half-written entry behind (a builder killed outright leaves its temporary directory,
which the next build of that entry deletes). Concurrent first uses (e.g. `benchmarks/quality.py
--parallel=2` on a fresh machine) build once: builders of one entry take an advisory lock
(`CACHE/NAME.lock`, `fcntl.flock`, released by the OS if the holder dies) and the others wait
for it and use its result. Where `fcntl` is missing (Windows) they build side by side and end
with one complete copy.
"""

import contextlib
import glob
import os
import shutil
import sys
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent builders each build.
    fcntl = None


def default_cache_dir():
    """The cache root: `$WSS_CACHE_DIR` if set, else `~/.cache/wss`."""
    return os.environ.get("WSS_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "wss")


def entry_dir(name, cache_dir=None):
    """The directory of the cache entry `name` (whether or not it exists yet)."""
    return os.path.join(cache_dir or default_cache_dir(), name)


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
    final_dir = entry_dir(name, cache_dir)
    if os.path.isfile(os.path.join(final_dir, marker)):
        return final_dir
    os.makedirs(cache_dir, exist_ok=True)
    with _build_lock(os.path.join(cache_dir, name + ".lock"), name) as locked:
        if os.path.isfile(os.path.join(final_dir, marker)):
            return final_dir  # Built by the process that held the lock.
        if locked:  # No one else is building this entry: a temporary one is abandoned.
            _remove_abandoned_builds(name, cache_dir)
        return _build(name, build, marker, cache_dir, final_dir)


def _remove_abandoned_builds(name, cache_dir):
    """Deletes `CACHE/NAME.tmp*`, left by a builder killed outright (SIGKILL, power loss).

    Only called under the entry's lock, so no live builder owns them.
    """
    for path in glob.glob(os.path.join(glob.escape(cache_dir), glob.escape(name) + ".tmp*")):
        if os.path.isdir(path):
            print(f"Removing {path}, an interrupted build of {name}", file=sys.stderr,
                  flush=True)
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(path, name):
    """Holds an exclusive advisory lock on `path`, saying so when it has to wait.

    Yields whether the lock is held (False where locks are unavailable).
    """
    if fcntl is None:
        yield False
        return
    with open(path, "a") as handle:
        locked = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process that is building {name} in the cache "
                  f"(lock {path})", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # A file system without locks (some network mounts): build unlocked.
            locked = False
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _build(name, build, marker, cache_dir, final_dir):
    """Builds the entry in a temporary sibling directory and renames it to `final_dir`."""
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
