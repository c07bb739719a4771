"""The numbers evaluate.py reports about confidence, on synthetic cases with known answers."""
import numpy as np
import pytest

from cephalometric.evaluation.calibration import (
    bootstrap_intervals,
    brier_score,
    error_calibration,
    interval_coverage,
    reliability,
    split_half_consistency,
    worst_in_top,
)
from cephalometric.uncertainty import sigma_of_radius90


def test_a_calibrated_radius_covers_ninety_percent_and_ranks_the_errors():
    rng = np.random.default_rng(0)
    expected = rng.uniform(1, 10, (200, 19))            # stated mean radial errors
    sigma = expected / np.sqrt(np.pi / 2)                # Rayleigh: mean = sigma sqrt(pi / 2)
    actual = np.linalg.norm(rng.normal(size=(200, 19, 2)) * sigma[..., None], axis=-1)
    radius90 = sigma / sigma_of_radius90(1.0)
    numbers = error_calibration(expected, actual, radius90)
    assert 0.87 <= numbers['radius90_coverage'] <= 0.93
    assert numbers['spearman_landmarks'] > 0.5
    # a radius half as large covers far less: the coverage number can fail
    assert error_calibration(expected, actual, radius90 / 2)['radius90_coverage'] < 0.5


def calibrated_case(images, seed):
    rng = np.random.default_rng(seed)
    hardness = rng.uniform(0.5, 3.0, (images, 1))          # images differ in difficulty
    expected = hardness * rng.uniform(1, 4, (images, 19))
    sigma = expected / np.sqrt(np.pi / 2)
    actual = np.linalg.norm(rng.normal(size=(images, 19, 2)) * sigma[..., None], axis=-1)
    return expected, actual, sigma / sigma_of_radius90(1.0)


def test_each_confidence_figure_comes_with_how_far_other_images_could_move_it():
    few, many = (error_calibration(*calibrated_case(n, 3)) for n in (30, 600))
    for key in ('spearman_landmarks', 'spearman_images', 'radius90_coverage'):
        low, high = few[f'{key}_interval']
        assert low <= few[key] <= high
        # twenty times the images: a far narrower interval
        assert np.ptp(many[f'{key}_interval']) < 0.5 * (high - low)
    assert 0.8 < few['radius90_coverage_interval'][0] < few['radius90_coverage_interval'][1] < 1
    # seeded: the same report twice
    assert error_calibration(*calibrated_case(30, 3)) == few


def test_a_bootstrap_interval_of_a_figure_that_cannot_be_had_is_none():
    values = np.arange(10.0)
    intervals = bootstrap_intervals(lambda rows: (float(values[rows].mean()), None), 10,
                                    rounds=200)
    assert intervals[0][0] < 4.5 < intervals[0][1] and intervals[1] is None
    assert bootstrap_intervals(lambda rows: (1.0,), 0) == []


def test_an_uninformative_statement_ranks_nothing():
    rng = np.random.default_rng(1)
    actual = rng.uniform(0, 5, (100, 19))
    numbers = error_calibration(rng.uniform(0, 5, (100, 19)), actual, np.full((100, 19), 4.5))
    assert abs(numbers['spearman_landmarks']) < 0.1
    assert abs(numbers['spearman_images']) < 0.3


def test_split_half_consistency_tells_image_difficulty_from_chance():
    rng = np.random.default_rng(2)
    hardness = rng.uniform(0.5, 3.0, (60, 1))            # some images are harder throughout
    landmark = rng.uniform(1, 4, (1, 19))                 # some landmarks are harder everywhere
    noisy = rng.exponential(1.0, (60, 19))
    assert split_half_consistency(hardness * landmark * noisy) > 0.6
    # errors that differ by landmark and by chance only: no image is harder than another
    assert abs(split_half_consistency(landmark * noisy)) < 0.3
    with_gaps = hardness * landmark * noisy
    with_gaps[::3, 4] = np.nan                           # a missing landmark is left out
    assert split_half_consistency(with_gaps) > 0.6
    with_gaps[:, 6] = np.nan                             # so is a landmark without any truth
    assert split_half_consistency(with_gaps) > 0.6
    assert split_half_consistency(with_gaps[:2]) is None           # too few images


def test_worst_images_in_the_top_fifth():
    actual = np.arange(50.0)
    assert worst_in_top(actual, actual) == 1.0
    assert worst_in_top(-actual, actual) == 0.0
    assert worst_in_top(np.ones(3), np.ones(3)) is None          # too few images


def test_interval_coverage_and_missing_values():
    assert interval_coverage([(0, 2), (0, 2), (None, 1), (0, 1)], [1, 3, 0.5, None]) == 0.5


def test_brier_and_reliability():
    truth = [1, 2, 3, None]
    perfect = [{1: 1.0, 2: 0.0, 3: 0.0}, {1: 0.0, 2: 1.0, 3: 0.0}, {1: 0.0, 2: 0.0, 3: 1.0}, {}]
    assert brier_score(perfect, truth) == 0.0
    uniform = [{1: 1 / 3, 2: 1 / 3, 3: 1 / 3}] * 3
    assert brier_score(uniform, truth[:3]) == pytest.approx(2 / 3)
    points = reliability(perfect, truth)
    assert [p['observed'] for p in points] == [0.0, 1.0]
    assert sum(p['count'] for p in points) == 9
