"""Landmark error radii -> measurement intervals and skeletal-class probabilities."""
import math

import numpy as np
import pytest

from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import compute_measurements
from cephalometric.uncertainty import (
    class_probabilities,
    sigma_of_radius90,
    tracing_certainty,
)
from tests.test_measurements import FACE, sn_ab, standard


def test_the_90_radius_covers_90_percent_of_its_gaussian():
    rng = np.random.default_rng(0)
    radius = 3.0
    errors = rng.normal(0, sigma_of_radius90(radius), (200_000, 2))
    covered = np.mean(np.linalg.norm(errors, axis=1) <= radius)
    assert abs(covered - 0.9) < 0.005


def test_an_interval_widens_with_its_landmarks_error_and_only_then():
    names, coords = standard(FACE)
    radius = np.full(len(names), 1.0)
    before = tracing_certainty(names, coords, radius)['intervals']
    radius[names.index('A point')] = 4.0
    after = tracing_certainty(names, coords, radius)['intervals']
    width = {key: (lambda i: i[1] - i[0]) for key in before}
    assert width['ANB'](after['ANB']) > 2 * width['ANB'](before['ANB'])
    assert after['SN_GoMe'] == pytest.approx(before['SN_GoMe'])   # A point is not in it
    assert after['SNB'] == pytest.approx(before['SNB'])


def test_intervals_cover_sampled_errors_at_their_level():
    """The first-order intervals against sampling the landmarks themselves (correlated errors:
    S and N enter SNA, SNB and ANB alike)."""
    names, coords = standard(FACE)
    radius = np.full(len(names), 2.0)
    interval = tracing_certainty(names, coords, radius)['intervals']
    rng = np.random.default_rng(1)
    sigma = sigma_of_radius90(2.0)
    inside = {key: 0 for key in ('SNA', 'SNB', 'ANB', 'SN_GoMe')}
    for _ in range(600):
        sample = coords + rng.normal(0, sigma, coords.shape)
        values = compute_measurements(names, sample)
        for key in inside:
            inside[key] += interval[key][0] <= values[key] <= interval[key][1]
    for key, count in inside.items():
        assert 0.85 <= count / 600 <= 0.95, (key, count)


@pytest.mark.parametrize('anb, expected_class', [(4.0, None), (2.0, 1), (8.0, 2), (-3.0, 3)])
def test_class_probability_near_a_half_at_the_threshold(anb, expected_class):
    names, coords = sn_ab(82.0, 82.0 - anb)
    certainty = tracing_certainty(names, coords, np.full(len(names), 1.5))
    probabilities = {int(k): p for k, p in certainty['class_probabilities'].items()}
    assert sum(probabilities.values()) == pytest.approx(1.0)
    if expected_class is None:
        assert probabilities[1] == pytest.approx(0.5, abs=0.02)
        assert probabilities[2] == pytest.approx(0.5, abs=0.02)
        assert certainty['class_borderline']
    else:
        assert probabilities[expected_class] > 0.9 and not certainty['class_borderline']


def test_class_probabilities_of_exact_landmarks_are_the_hard_cut():
    assert class_probabilities(3.99, 0.0) == {1: 1.0, 2: 0.0, 3: 0.0}
    assert class_probabilities(4.01, 0.0) == {1: 0.0, 2: 1.0, 3: 0.0}
    spread = class_probabilities(3.99, 1.0)
    assert spread[1] == pytest.approx(spread[2], abs=0.01)


def test_missing_landmarks_and_radii():
    names, coords = standard({k: v for k, v in FACE.items() if k != 'B point'})
    certainty = tracing_certainty(names, coords, np.full(len(names), np.nan))
    assert 'ANB' not in certainty['intervals'] and 'class_probabilities' not in certainty
    names, coords = standard(FACE)
    exact = tracing_certainty(names, coords, np.zeros(len(names)))
    low, high = exact['intervals']['ANB']
    assert math.isclose(low, high)
    assert len(STANDARD_LANDMARKS) == len(names)
