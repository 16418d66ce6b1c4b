"""The paper's orderings, checked against the measured cells.

Each claim compares two rows (or, for calibration, three pseudo-label sources of one row) for
every dataset and split of the plan, and says whether it holds on the means and whether the
seeds' min-max ranges are apart (the winner's worst seed above the loser's best) or overlap.
"""

# (claim, the row that should be higher, the row it should beat), by mIoU at the same split.
MIOU_CLAIMS = (
    ("PseudoSeg beats supervised", "pseudoseg", "supervised"),
    ("PseudoSeg beats self-training", "pseudoseg", "self_training"),
    ("image-level labels beat unlabelled images", "pseudoseg_image_labels", "pseudoseg"),
    ("fusion beats decoder-only pseudo labels", "fusion", "decoder_only"),
    ("fusion beats SGC-only pseudo labels", "fusion", "sgc_only"),
)
# The fusion's runs (`--methods=...,fusion`): demo.gin's own labels are the decoder's.
ECE_ROW = "fusion"
ECE_CLAIM = "fused pseudo labels have the lowest ECE (fusion runs)"
ECE_SOURCES = ("decoder", "sgc", "fused")


def _spread(winner, loser):
    """`ranges apart`, `ranges overlap` or `one seed` for two Stats."""
    if winner.count < 2 or loser.count < 2:
        return "one seed"
    apart = winner.low > loser.high or winner.high < loser.low
    return "ranges apart" if apart else "ranges overlap"


def compare(better, worse, higher_is_better=True, digits=2, names=("", "")):
    """Whether `better` beats `worse` on the means.

    Args:
      better: `tables.Stats` of the row that the claim says is better, or None.
      worse: `tables.Stats` of the other row, or None.
      higher_is_better: False for errors (ECE).
      digits: decimals of the figures (in %).
      names: words put before the two figures, e.g. ("fused", "SGC").

    Returns:
      (holds, text): holds is True, False or None (not measured); text says so with the
      means, e.g. `holds: 28.75 > 23.88, ranges apart`.
    """
    if better is None or worse is None:
        return None, "-"
    holds = better.mean > worse.mean if higher_is_better else better.mean < worse.mean
    sign = (">" if better.mean > worse.mean else "<" if better.mean < worse.mean else "=")
    first, second = (f"{name} " if name else "" for name in names)
    text = (f"{'holds' if holds else 'fails'}: {first}{better.mean * 100:.{digits}f} {sign} "
            f"{second}{worse.mean * 100:.{digits}f}, {_spread(better, worse)}")
    return holds, text


def ece_claim(results, dataset, split):
    """Whether the fusion runs' fused distribution has a lower ECE than their decoder and SGC.

    Returns:
      (holds, text) as `compare`, against the better calibrated of decoder and SGC.
    """
    figures = {s: results.figure(dataset, ECE_ROW, split, f"ece_{s}") for s in ECE_SOURCES}
    if any(f is None for f in figures.values()):
        return None, "-"
    rival = min(("decoder", "sgc"), key=lambda s: figures[s].mean)
    return compare(figures["fused"], figures[rival], higher_is_better=False, digits=1,
                   names=("fused", "SGC" if rival == "sgc" else "decoder"))


def check_all(results, datasets, splits):
    """Every claim for every (dataset, split).

    Args:
      results: `tables.Results`.
      datasets: the datasets of the plan.
      splits: the label fractions of the plan (not `all`).

    Returns:
      [(claim, [(holds, text) per (dataset, split)])], the claims in paper order.
    """
    columns = [(d, s) for d in datasets for s in splits]
    checked = []
    for claim, better, worse in MIOU_CLAIMS:
        checked.append((claim, [compare(results.figure(d, better, s), results.figure(d, worse, s))
                                for d, s in columns]))
    checked.append((ECE_CLAIM, [ece_claim(results, d, s) for d, s in columns]))
    return checked


def verdict(outcomes):
    """`holds in k of n measured`, or `not measured`."""
    measured = [holds for holds, _ in outcomes if holds is not None]
    if not measured:
        return "not measured"
    return f"holds in {sum(measured)} of {len(measured)}"

