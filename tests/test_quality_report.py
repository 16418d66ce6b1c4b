"""The quality benchmark's report: means, min-max, gap closed and per-cell listing from runs."""

import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "quality.py")


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_cell(quality, root, method, seed, miou, finished=True, ece=None):
    directory = quality.cell_dir(str(root), "random_colours", method, seed)
    os.makedirs(directory)
    result = {"step": 10, "finished": finished, "seconds": 1.5}
    if ece is not None:
        result["pseudo_labels"] = {"ece_decoder": ece, "ece_sgc": ece, "ece_fused": ece}
    with open(os.path.join(directory, "train_result.json"), "w") as f:
        json.dump(result, f)
    with open(os.path.join(directory, "ckpt-10.eval.json"), "w") as f:
        json.dump({"miou": miou}, f)
    with open(os.path.join(directory, "command.txt"), "w") as f:
        f.write(f"python -m wss.train {method} {seed}\n")


def test_report_means_ranges_and_gap_closed(quality, tmp_path):
    for seed, (low, high, semi) in enumerate([(0.20, 0.40, 0.30), (0.22, 0.42, 0.34)]):
        _fake_cell(quality, tmp_path, "supervised_1_16", seed, low)
        _fake_cell(quality, tmp_path, "supervised_all", seed, high)
        _fake_cell(quality, tmp_path, "pseudoseg", seed, semi, ece=0.1 * (seed + 1))
    _fake_cell(quality, tmp_path, "pseudoseg_image_labels", 0, 0.9, finished=False)
    methods = ["supervised_1_16", "supervised_all", "pseudoseg", "pseudoseg_image_labels"]
    text = quality.report(str(tmp_path), ["random_colours"], methods, [0, 1])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    semi = rows["PseudoSeg, 1/16 + unlabelled images (fusion)"]
    # Means 21 / 41 / 32: the semi row closes (32 - 21) / (41 - 21) = 55% of the gap.
    assert "32.00 (30.00-34.00)" in semi and "| 55% |" in semi and "2/2" in semi
    assert "15.0 (10.0-20.0)" in semi  # ECE in %, mean (min-max).
    # An unfinished cell is not counted.
    assert rows["PseudoSeg, 1/16 + image-level labels"].endswith("| - | - | - | - | - | 0/2 |")
    listing = quality.cell_listing(str(tmp_path), ["random_colours"], methods, [0, 1])
    assert listing.count("| random_colours |") == 6
    assert "`python -m wss.train pseudoseg 1`" in listing
    # A finished cell is not rerun.
    cells = [("random_colours", "pseudoseg", 0)]
    assert quality.run_cells(cells, str(tmp_path), parallel=1) == []
