"""benchmarks/probe_student_fit.py: the shares and mIoUs of labels and a student against masks."""

import numpy as np
import pytest
from script_loading import load_script

from wss.data.records import IGNORE_LABEL


@pytest.fixture(scope="module")
def probe():
    return load_script("benchmarks/probe_student_fit.py")


def _miou(truth, predicted, num_classes):
    """Mean IoU over the classes present in truth or prediction (float64 reference)."""
    ious = []
    for c in range(num_classes):
        union = np.sum((truth == c) | (predicted == c))
        if union:
            ious.append(np.sum((truth == c) & (predicted == c)) / union)
    return float(np.mean(ious))


def test_foreground_is_split_by_what_the_labels_say_and_the_student_is_scored_there(probe):
    # 10 pixels: 2 background, 8 foreground (classes 1 and 2), one pixel of unknown truth.
    masks = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2, IGNORE_LABEL])
    labels = np.array([0, IGNORE_LABEL, 1, 1, 2, 0, 2, 2, 1, IGNORE_LABEL, 1])
    student = np.array([0, 0, 1, 2, 2, 1, 2, 1, 1, 2, 0])
    report = probe.fit_report(masks, labels, student, num_classes=3)
    # Foreground: right at 2, 3, 6, 7 (4 of 8); another class at 4, 8; background at 5;
    # left out at 9.
    assert report["label_right"] == pytest.approx(4 / 8)
    assert report["label_other_class"] == pytest.approx(2 / 8)
    assert report["label_background"] == pytest.approx(1 / 8)
    # Where the labels are right the student is right at 2 and 6 (2 of 4).
    assert report["student_right_where_label_right"] == pytest.approx(2 / 4)
    # Where they name another class (4: label 2, truth 1; 8: label 1, truth 2) the student
    # follows them at both and is right at neither.
    assert report["student_right_where_label_other"] == pytest.approx(0.0)
    assert report["student_follows_label_other"] == pytest.approx(1.0)
    assert report["student_right_where_label_background"] == pytest.approx(1.0)
    known = masks != IGNORE_LABEL
    as_prediction = np.where(labels == IGNORE_LABEL, 0, labels)
    assert report["labels_miou"] == pytest.approx(_miou(masks[known], as_prediction[known], 3))
    assert report["student_miou"] == pytest.approx(_miou(masks[known], student[known], 3))


def test_without_labels_only_the_model_is_scored(probe):
    masks = np.array([0, 1, 1, 2])
    report = probe.fit_report(masks, None, np.array([0, 1, 2, 2]), num_classes=3)
    assert set(report) == {"student_miou"}
    assert report["student_miou"] == pytest.approx(_miou(masks, np.array([0, 1, 2, 2]), 3))
