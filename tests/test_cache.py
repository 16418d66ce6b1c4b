"""Tests of the on-disk cache of generated datasets and pretrained checkpoints.

Module under test: wss.cache.
"""

import os
import threading

import pytest

from wss import cache

fcntl = pytest.importorskip("fcntl")


def _writer(marker, started=None, release=None, calls=None):
    def build(directory):
        if calls is not None:
            calls.append(directory)
        if started is not None:
            started.set()
            assert release.wait(10)
        with open(os.path.join(directory, marker), "w") as f:
            f.write("done")
    return build


def test_concurrent_first_uses_build_once_and_share_the_result(tmp_path):
    started, release, calls = threading.Event(), threading.Event(), []
    results = {}

    def use(key, build):
        results[key] = cache.ensure_cached("entry", build, "done.txt", cache_dir=str(tmp_path))

    first = threading.Thread(target=use, args=("first", _writer("done.txt", started, release,
                                                                calls)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=use, args=("second", _writer("done.txt", calls=calls)))
    second.start()
    second.join(0.3)
    assert second.is_alive(), "the second user should wait for the first build"
    release.set()
    first.join(10)
    second.join(10)
    assert len(calls) == 1
    assert results["first"] == results["second"] == str(tmp_path / "entry")
    assert (tmp_path / "entry" / "done.txt").read_text() == "done"
    assert sorted(os.listdir(tmp_path)) == ["entry", "entry.lock"]


def test_a_failed_build_leaves_nothing_and_the_next_use_builds_again(tmp_path):
    def broken(directory):
        open(os.path.join(directory, "partial"), "w").close()
        raise RuntimeError("generator crashed")

    with pytest.raises(RuntimeError, match="generator crashed"):
        cache.ensure_cached("entry", broken, "done.txt", cache_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["entry.lock"]
    calls = []
    path = cache.ensure_cached("entry", _writer("done.txt", calls=calls), "done.txt",
                               cache_dir=str(tmp_path))
    assert len(calls) == 1 and os.path.isfile(os.path.join(path, "done.txt"))
    # Complete entries are returned without building.
    cache.ensure_cached("entry", _writer("done.txt", calls=calls), "done.txt",
                        cache_dir=str(tmp_path))
    assert len(calls) == 1


def test_a_killed_build_s_temporary_directory_is_removed_by_the_next_build(tmp_path):
    """A builder killed outright leaves `NAME.tmpXXXX`; the next builder of NAME, holding the
    lock, deletes it. Another entry's temporary directory is not touched."""
    for leftover in ("entry.tmpab12", "entry2.tmpcd34"):
        os.makedirs(tmp_path / leftover / "ckpt")
    path = cache.ensure_cached("entry", _writer("done.txt"), "done.txt",
                               cache_dir=str(tmp_path))
    assert os.path.isfile(os.path.join(path, "done.txt"))
    assert sorted(os.listdir(tmp_path)) == ["entry", "entry.lock", "entry2.tmpcd34"]
