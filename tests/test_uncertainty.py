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


def test_the_calibrated_interval_scale_narrows_an_interval_and_sharpens_the_class():
    """The error calibration's factor per measurement scales its interval about the value (a
    distance in mm takes its pixel twin's factor), and the class probabilities follow ANB's."""
    names, coords = standard(FACE)
    radius = np.full(len(names), 2.0)
    plain = tracing_certainty(names, coords, radius, mm_per_pixel=0.1)
    scaled = tracing_certainty(names, coords, radius, mm_per_pixel=0.1,
                               interval_scale={'ANB': 0.5, 'U1_NA_px': 2.0})
    width = {key: pair[1] - pair[0] for key, pair in plain['intervals'].items()}
    for key, factor in (('ANB', 0.5), ('U1_NA_px', 2.0), ('U1_NA_mm', 2.0), ('SNA', 1.0)):
        low, high = scaled['intervals'][key]
        assert high - low == pytest.approx(factor * width[key], rel=1e-6), key
        assert (low + high) / 2 == pytest.approx(sum(plain['intervals'][key]) / 2)
    top = max(plain['class_probabilities'].values())
    assert max(scaled['class_probabilities'].values()) > top


def test_fit_interval_scale_recovers_intervals_stated_twice_too_wide():
    """Validation tracings whose landmarks err half as much as their radii say: every
    measurement's fitted factor is near 0.5, so its interval then holds about 90%."""
    from cephalometric.evaluation.calibration import fit_interval_scale
    names, coords = standard(FACE)
    rng = np.random.default_rng(3)
    stated = 2.0
    sigma = sigma_of_radius90(stated) / 2
    truth = np.repeat(coords[None], 300, axis=0)
    predicted = truth + rng.normal(0, sigma, truth.shape)
    scale = fit_interval_scale(names, predicted, np.full(truth.shape[:2], stated), truth)
    assert {'SNA', 'SNB', 'ANB', 'SN_GoMe'} <= set(scale)
    for key in ('SNA', 'SNB', 'ANB', 'SN_GoMe'):
        assert scale[key] == pytest.approx(0.5, abs=0.08), key
    inside = 0
    for points, true_points in zip(predicted, truth):
        low, high = tracing_certainty(names, points, np.full(len(names), stated),
                                      interval_scale=scale)['intervals']['ANB']
        inside += low <= compute_measurements(names, true_points)['ANB'] <= high
    assert 0.85 <= inside / len(truth) <= 0.95
