"""Tests of split files and the class-covering labelled-subset sampler."""

import numpy as np
import pytest

from wss.data import splits


def _pool(n=200, num_classes=21, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"img{i:04d}" for i in range(n)]
    sets = {i: set(rng.choice(np.arange(1, num_classes), size=2, replace=False)) | {0}
            for i in ids}
    return ids, sets


def test_sampler_covers_every_class_and_is_reproducible():
    ids, sets = _pool()
    for n in (2, 4, 8, 16):
        a = splits.sample_labelled_split(ids, sets, 1.0 / n, seed=3)
        b = splits.sample_labelled_split(ids, sets, 1.0 / n, seed=3)
        assert a == b
        assert len(a) == int(np.ceil(len(ids) / n))
        covered = set().union(*(sets[i] for i in a))
        assert covered == set(range(21))
    assert len(splits.sample_labelled_split(ids, sets, 30, seed=0)) == 30


def test_reference_counts():
    # ceil: 1,464 VOC train images -> 732 / 366 / 183 / 92; COCO 118,287 / 512 -> 232.
    assert [splits._count(1464, 1 / n) for n in (2, 4, 8, 16)] == [732, 366, 183, 92]
    assert [splits._count(118287, 1 / n) for n in (32, 512)] == [3697, 232]


def test_sampler_resamples_until_rare_class_appears():
    ids = [f"i{k}" for k in range(100)]
    sets = [{0, 1} for _ in ids]
    sets[57] = {0, 2}  # the only image with class 2
    chosen = splits.sample_labelled_split(ids, sets, 0.1, seed=0)
    assert "i57" in chosen
    with pytest.raises(ValueError, match=r"Classes \[5\] appear in no image"):
        splits.sample_labelled_split(ids, sets, 0.1, required_classes=[1, 5])
    with pytest.raises(ValueError, match="covered every class"):
        splits.sample_labelled_split(ids, [{k} for k in range(100)], 0.5, max_tries=5)


def test_complement_is_disjoint():
    ids, sets = _pool(50)
    labelled = splits.sample_labelled_split(ids, sets, 0.5, seed=1)
    rest = splits.complement(ids, labelled)
    assert not set(rest) & set(labelled) and len(rest) + len(labelled) == 50


def test_split_file_format(tmp_path):
    path = str(tmp_path / "s.txt")
    (tmp_path / "s.txt").write_text(
        "# comment\ntrain2017/000000177254\n\n2007_000032.jpg\n2007_000032\n")
    assert splits.read_split_file(path) == ["000000177254", "2007_000032"]
    splits.write_split_file(["a", "b"], str(tmp_path / "d" / "o.txt"))
    assert (tmp_path / "d" / "o.txt").read_text() == "a\nb\n"
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        splits.read_split_file(str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        splits.read_split_file(str(tmp_path / "nope.txt"))
