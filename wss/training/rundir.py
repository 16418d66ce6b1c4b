"""A log directory's safety: one writer, atomic run files, no stale temporaries.

* `LogdirLock`: one training process per log directory (re-entrant within the process). On a
  local (or NFS) file system it is an advisory `flock` on `LOGDIR/.wss.lock`, which the kernel
  releases when the holder dies, so a lock left by a killed process is taken over at once and
  safely. On other file systems (`gs://...`) it is an ownership file that the holder refreshes
  every `heartbeat_secs`; one not refreshed for `stale_secs` is taken over. A second process
  fails at once with a `LogdirLockedError` that names the holder's host and pid.
* `write_atomic`: a run file (`config.gin`, `train_result.json`, ...) is written to a temporary
  sibling, flushed to disk and renamed over the old one, so that a crash or a full disk leaves
  either the old or the new file, never a truncated one.
* `remove_stale_temporaries`: partial checkpoints (`ckpt-N_temp/`) and temporary files left by
  a killed or failed run, removed by the next run once it holds the lock.
"""

import json
import os
import re
import socket
import threading
import time
import uuid

import tensorflow as tf
from absl import logging

try:
    import fcntl
except ImportError:  # Not POSIX: the ownership file is used everywhere.
    fcntl = None

LOCK_FILENAME = ".wss.lock"
# Temporary run files are `<name>.wss-tmp-<hex>`; the checkpoint writers' own temporaries are
# `ckpt-N_temp/` (sharded saves) and `checkpoint.tmp<hex>` (the checkpoint index file).
TEMP_MARK = ".wss-tmp-"
_STALE_PATTERNS = (re.compile(r"^ckpt-\d+_temp"), re.compile(r"^checkpoint\.tmp[0-9a-f]+$"),
                   re.compile(r".*" + re.escape(TEMP_MARK) + r"[0-9a-f]+$"))


class LogdirLockedError(RuntimeError):
    """Another process holds the log directory."""


# Locks this process holds, by lock file path: a nested `LogdirLock` on the same directory
# (e.g. `wss.train` holding it across training, evaluation and export) only counts.
_HELD = {}
_HELD_MUTEX = threading.Lock()


def _is_local(path):
    return "://" not in path


def _holder():
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "heartbeat": time.time()}


def _describe(holder):
    if not holder:
        return "an unknown process"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(since {holder.get('started', '?')})")


def _parse(text):
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else None
    except ValueError:
        return None


class LogdirLock:
    """Makes the calling process the only writer of a log directory (a context manager).

    Args:
      directory: the log directory (created if needed).
      heartbeat_secs: ownership-file mode: how often the holder refreshes the file.
      stale_secs: ownership-file mode: the age after which a lock counts as abandoned.
      use_flock: force (True) or avoid (False) `flock`; default: `flock` on local paths.

    Raises (on entry):
      LogdirLockedError: naming the directory and the holder's host and pid.
    """

    def __init__(self, directory, heartbeat_secs=60.0, stale_secs=600.0, use_flock=None):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILENAME)
        self.heartbeat_secs = heartbeat_secs
        self.stale_secs = stale_secs
        if use_flock is None:
            use_flock = fcntl is not None and _is_local(directory)
        self.use_flock = use_flock
        self._fd = None
        self._token = None
        self._stop = threading.Event()
        self._thread = None
        self._info = None

    def _busy(self, holder):
        return LogdirLockedError(
            f"--logdir {self.directory} is in use by another training process: "
            f"{_describe(holder)} holds {self.path}. Wait for it to finish or stop it; two "
            "writers would overwrite each other's checkpoints.")

    def _key(self):
        return os.path.realpath(self.path) if _is_local(self.path) else self.path

    def acquire(self):
        """Takes the lock (re-entrant within a process) or raises `LogdirLockedError`."""
        with _HELD_MUTEX:
            held = _HELD.get(self._key())
            if held is not None:
                held[1] += 1
                return self
            tf.io.gfile.makedirs(self.directory)
            if self.use_flock:
                self._acquire_flock()
            else:
                self._acquire_file()
            _HELD[self._key()] = [self, 1]
        return self

    def _acquire_flock(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _parse(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise self._busy(holder) from None
        previous = _parse(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
        if previous:  # Released cleanly, the file is empty: its holder died.
            logging.warning("%s: taking over the lock of %s, which is no longer running",
                            self.directory, _describe(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _read_file(self):
        try:
            with tf.io.gfile.GFile(self.path, "r") as f:
                return _parse(f.read())
        except tf.errors.NotFoundError:
            return None

    def _acquire_file(self):
        if tf.io.gfile.exists(self.path):
            holder = self._read_file()
            age = time.time() - float((holder or {}).get("heartbeat", 0.0))
            if holder and age < self.stale_secs:
                raise self._busy(holder)
            logging.warning("%s: taking over the stale lock of %s (no heartbeat for %.0f s)",
                            self.directory, _describe(holder), age)
        self._token = uuid.uuid4().hex
        self._info = None
        self._write_file()
        time.sleep(min(1.0, self.heartbeat_secs))  # A racing process has written by now.
        holder = self._read_file()
        if not holder or holder.get("token") != self._token:
            self._token = None
            raise self._busy(holder)
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name="wss-logdir-heartbeat")
        self._thread.start()

    def _write_file(self):
        self._info = dict(self._info or _holder(), heartbeat=time.time(),
                          token=self._token)
        write_atomic(self.path, json.dumps(self._info))

    def _heartbeat(self):
        while not self._stop.wait(self.heartbeat_secs):
            holder = self._read_file()
            if not holder or holder.get("token") != self._token:
                logging.error("%s: the log directory lock was taken by %s", self.directory,
                              _describe(holder))
                return
            self._write_file()

    def release(self):
        """Releases the lock (the lock file stays, empty, in flock mode)."""
        with _HELD_MUTEX:
            held = _HELD.get(self._key())
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del _HELD[self._key()]
                held[0]._release()

    def _release(self):
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # Closing releases the flock.
            self._fd = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._token is not None:
            holder = self._read_file()
            if holder and holder.get("token") == self._token:
                tf.io.gfile.remove(self.path)
            self._token = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def write_atomic(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary sibling and a rename.

    Local files are flushed to disk before the rename. On any error (a full disk) the
    temporary file is removed and `path` keeps its previous content.
    """
    temp = f"{path}{TEMP_MARK}{uuid.uuid4().hex[:12]}"
    binary = isinstance(data, bytes)
    try:
        if _is_local(path):
            with open(temp, "wb" if binary else "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            with tf.io.gfile.GFile(temp, "wb" if binary else "w") as f:
                f.write(data)
        tf.io.gfile.rename(temp, path, overwrite=True)
    except BaseException:
        try:
            tf.io.gfile.remove(temp)
        except tf.errors.OpError:
            pass
        raise


def remove_stale_temporaries(directory):
    """Removes the temporaries of interrupted saves in `directory` (not recursive).

    Call only while holding the directory's `LogdirLock`: they are then nobody's work in
    progress. Returns the names removed.
    """
    removed = []
    if not tf.io.gfile.isdir(directory):
        return removed
    for name in sorted(tf.io.gfile.listdir(directory)):
        name = name.rstrip("/")
        if not any(p.match(name) for p in _STALE_PATTERNS):
            continue
        path = os.path.join(directory, name)
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
        removed.append(name)
    if removed:
        print(f"Removed temporaries of an interrupted save in {directory}: "
              f"{', '.join(removed)}", flush=True)
    return removed
