"""The numbers of the report: finished cells by row, mean and min-max over seeds, gap closed.

`Results` reads every finished cell of a plan once; the report, the orderings and the plots
take their figures from it.
"""

import numpy as np

from . import grids, runner


class Stats(tuple):
    """(mean, min, max, n) of a figure over seeds."""

    __slots__ = ()

    def __new__(cls, values):
        values = np.asarray(values, np.float64)
        return super().__new__(cls, (float(values.mean()), float(values.min()),
                                     float(values.max()), int(values.size)))

    @property
    def mean(self):
        return self[0]

    @property
    def low(self):
        return self[1]

    @property
    def high(self):
        return self[2]

    @property
    def count(self):
        return self[3]


def stats(values):
    """`Stats` of the values that are not None, or None when there are none."""
    values = [v for v in values if v is not None]
    return Stats(values) if values else None


def fmt(figure, scale=100.0, digits=2):
    """`mean (min-max)` scaled (the range only over several seeds), `-` for None."""
    if figure is None:
        return "-"
    text = f"{figure.mean * scale:.{digits}f}"
    if figure.count > 1:
        text += f" ({figure.low * scale:.{digits}f}-{figure.high * scale:.{digits}f})"
    return text


# Single runs of one cell differ by up to about 2 points of mIoU (cross-process
# nondeterminism, measured on the demo's runs), so a smaller gap is noise.
MIN_GAP = 0.02


def gap_closed(figure, low, high):
    """(figure - low) / (high - low) of the means, or None when it is undefined.

    It is undefined without the three figures, and when the gap itself is within noise: the
    upper row's mean is less than `MIN_GAP` above the lower row's, or, with several seeds in
    both, their min-max ranges overlap. Dividing by such a gap gives meaningless percentages.
    """
    if figure is None or low is None or high is None:
        return None
    if high.mean - low.mean < MIN_GAP:
        return None
    if high.count > 1 and low.count > 1 and high.low <= low.high:
        return None
    return (figure.mean - low.mean) / (high.mean - low.mean)


class Results:
    """The finished cells of a plan, by (dataset, method, split).

    Attributes:
      seeds: the seeds of the plan.
      cells: {(dataset, method, split): [result dict of each finished seed]}.
    """

    def __init__(self, root, cells, num_steps):
        """Reads the cells.

        Args:
          root: the grid root.
          cells: the plan's `grids.Cell`s.
          num_steps: the grid's training steps (cells at other steps are not read).
        """
        self.seeds = sorted({c.seed for c in cells})
        self.cells = {}
        for cell in cells:
            row = self.cells.setdefault((cell.dataset, cell.method, cell.split), [])
            result = runner.cell_result(root, cell, num_steps)
            if result is not None:
                row.append(result)

    def figure(self, dataset, method, split, key="miou"):
        """`Stats` of `key` over the finished seeds of a row, or None."""
        return stats([r.get(key) for r in self.cells.get((dataset, method, split), [])])

    def upper_bound(self, dataset):
        """mIoU `Stats` of supervised with all labels."""
        return self.figure(dataset, "supervised", grids.ALL_LABELS)

    def gap(self, dataset, method, split):
        """The share of the supervised(split) -> supervised(all) gap a row closes, or None."""
        return gap_closed(self.figure(dataset, method, split),
                          self.figure(dataset, "supervised", split), self.upper_bound(dataset))

    def count(self, dataset, method, split):
        """How many seeds of a row finished."""
        return len(self.cells.get((dataset, method, split), []))

    def pooled_reliability(self, dataset, method, split):
        """Reliability bins pooled over seeds: {source: (count, confidence sum, correct sum)}."""
        pooled = {}
        for result in self.cells.get((dataset, method, split), []):
            for source, bins in (result.get("reliability") or {}).items():
                count = np.asarray(bins["count"], np.float64)
                confidence = np.nan_to_num(np.asarray(bins["confidence"], np.float64))
                accuracy = np.nan_to_num(np.asarray(bins["accuracy"], np.float64))
                sums = pooled.setdefault(source, np.zeros((3, count.size)))
                sums += np.stack([count, confidence * count, accuracy * count])
        return pooled
