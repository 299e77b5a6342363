"""The NAB scorer: hand-computed cases, and the reference detectors' published scores on the subset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.nab_scorer import PROFILES, ScoredFile, probation_length, scaled_sigmoid, score_corpus
from evaluation import nab_io
from tests.unit.nab_corpus import nab_dir

STANDARD = PROFILES[0]


def sig(y: float) -> float:
    return -1.0 if y >= 3 else 2 / (1 + math.exp(5 * y)) - 1


def test_probation_is_15_percent_capped_at_750() -> None:
    assert probation_length(1000) == 150
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750


def test_scaled_sigmoid_matches_nab() -> None:
    assert scaled_sigmoid(np.array([0.0]))[0] == 0.0
    assert scaled_sigmoid(np.array([3.0]))[0] == -1.0
    assert scaled_sigmoid(np.array([-1.0]))[0] == pytest.approx(0.98661, abs=1e-5)


def test_window_detection_and_false_positives_by_hand() -> None:
    n = 1000  # probation 150
    scores = np.zeros(n)
    scores[300] = 0.9  # in window [290, 309], W = 20
    scores[320] = 0.8  # 11 rows past the window
    scores[200] = 0.7  # before the first window
    f = ScoredFile("a.csv", scores, ((290, 309), (600, 619)))
    r = score_corpus([f], STANDARD)
    tp = sig(-(309 - 300 + 1) / 20) / sig(-1)
    fp_after = 0.11 * sig(abs(309 - 320) / 19)
    candidates = {0.9: tp - 1.0, 0.8: tp + fp_after - 1.0, 0.7: tp + fp_after - 0.11 - 1.0, 1.1: -2.0}
    best = max(candidates.values())
    assert r.raw_score == pytest.approx(best)
    assert r.threshold == next(t for t, v in candidates.items() if v == best)
    assert r.score == pytest.approx(100 * (best + 2) / 4)


def test_ties_keep_the_highest_threshold_and_probation_is_ignored() -> None:
    scores = np.zeros(1000)
    scores[10] = 1.0  # in probation: ignored
    r = score_corpus([ScoredFile("b.csv", scores, ())], STANDARD)
    assert (r.threshold, r.raw_score, r.score) == (1.1, 0.0, 0.0)


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ScoredFile("c.csv", np.array([0.1, np.nan]), ())
    with pytest.raises(ValueError, match="out of order"):
        ScoredFile("c.csv", np.zeros(10), ((5, 3),))


@pytest.mark.parametrize("detector", ["numenta", "windowedGaussian"])
def test_reference_detectors_score_as_published(detector: str) -> None:
    root = nab_dir()
    reference = json.loads((root / "reference_scores.json").read_text())[detector]
    windows = nab_io.read_windows(root / "labels" / "combined_windows.json")
    files = []
    results = root / "reference_results" / detector
    for name in nab_io.list_files(root / "data"):
        s = nab_io.read_series(results, name, column="anomaly_score")
        files.append(ScoredFile(name, s.values, nab_io.window_rows(s, windows[name])))
    for profile in PROFILES:
        r = score_corpus(files, profile)
        ref = reference[profile.name]
        assert r.score == pytest.approx(ref["score"], abs=1e-6)
        assert r.threshold == pytest.approx(ref["threshold"], abs=1e-12)
        assert r.raw_score == pytest.approx(ref["raw_score"], abs=1e-6)
    breakdown = (results / f"{detector}_standard_scores.csv").read_text().splitlines()[1:-1]
    per_file = score_corpus(files, PROFILES[0]).file_scores
    for line in breakdown:
        name, score = line.split(",")[2], float(line.split(",")[4])
        assert per_file[name] == pytest.approx(score, abs=1e-9)
