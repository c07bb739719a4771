"""The shape prior: an unusual tracing is found, whatever its pose, side or size, and the error
calibration weighs it as much as the validation errors say."""
import numpy as np
import pytest

from cephalometric.evaluation.calibration import shape_weight
from cephalometric.model.shape_prior import ShapePrior, fit_shape_prior

COUNT = 12


def posed(shape, rng, scale=None):
    """`shape` turned, scaled (px) and moved at random."""
    angle = rng.uniform(-0.4, 0.4)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = rng.uniform(80, 300) if scale is None else scale
    return scale * shape @ turn.T + rng.uniform(0, 500, 2)


@pytest.fixture(scope='module')
def prior():
    rng = np.random.default_rng(0)
    template = rng.uniform(-0.5, 0.5, (COUNT, 2))
    shapes = np.stack([posed(template + rng.normal(0, 0.01, template.shape), rng)
                       for _ in range(200)])
    return fit_shape_prior(shapes, np.ones(shapes.shape[:2], bool)), template


def test_a_misplaced_point_makes_the_tracing_unusual_and_stands_out_most(prior):
    prior, template = prior
    rng = np.random.default_rng(1)
    tracing = posed(template + rng.normal(0, 0.01, template.shape), rng, scale=200.0)
    usual = prior.deviation(tracing)
    assert prior.deviations(tracing).max() < 2.0      # 1% of 200 px noise
    moved = []
    for distance in (25.0, 50.0):
        wrong = tracing.copy()
        wrong[4] += [distance, 0.0]
        assert int(np.argmax(prior.deviations(wrong))) == 4
        moved.append(prior.deviation(wrong))
    assert 5 * usual < moved[0] < moved[1]


def test_pose_side_and_size_do_not_change_what_is_unusual(prior):
    prior, template = prior
    rng = np.random.default_rng(2)
    tracing = posed(template + rng.normal(0, 0.02, template.shape), rng, scale=100.0)
    deviations = prior.deviations(tracing)
    mirrored = tracing * [-1.0, 1.0] + [700.0, 0.0]     # the other profile side
    assert prior.deviations(mirrored) == pytest.approx(deviations, rel=1e-6)
    assert prior.deviations(3 * tracing) == pytest.approx(3 * deviations, rel=1e-6)


def test_no_prior_from_too_few_shapes_and_no_deviation_without_every_point(prior):
    prior, template = prior
    shapes = np.stack([template] * 10)
    assert fit_shape_prior(shapes, np.ones(shapes.shape[:2], bool)) is None
    spots = np.zeros((100, COUNT, 2))     # enough tracings, but none has a shape
    assert fit_shape_prior(spots, np.ones(spots.shape[:2], bool)) is None
    tracing = template * 100
    tracing[3] = np.nan
    assert np.isnan(prior.deviations(tracing)).all()
    with pytest.raises(ValueError, match='knows 12 landmarks'):
        prior.deviations(template[:5])
    again = ShapePrior.from_dict(prior.to_dict())
    assert again.deviations(template * 100) == pytest.approx(prior.deviations(template * 100))


def test_the_weight_is_the_one_the_errors_were_drawn_with():
    rng = np.random.default_rng(3)
    signals = rng.uniform(1, 3, (300, 10))
    deviations = rng.gamma(2.0, 0.5, (300, 1))
    drawn = np.hypot(signals, 3.0 * deviations)
    errors = drawn * np.sqrt(-2 * np.log(rng.uniform(size=drawn.shape)))   # Rayleigh
    assert 2.0 <= shape_weight(errors, signals, deviations) <= 4.5
    unrelated = signals * np.sqrt(-2 * np.log(rng.uniform(size=signals.shape)))
    assert shape_weight(unrelated, signals, deviations) < 1.0


@pytest.mark.parametrize('broken', [
    {'weight': -1.0}, {'weight': float('nan')}, {'mean': [0.0] * 3},
    {'precision': [[1.0] * 4] * 3}, {'precision': [[float('inf')] * 4] * 4},
    {'reference': [[0.0, 0.0]]}, {'reference': 'os.system'}])
def test_an_impossible_shape_prior_is_one_line(broken):
    from cephalometric.errors import UserError
    from cephalometric.model.settings import validate_settings
    shape = {'weight': 2.0, 'reference': [[0.1, 0.2], [-0.1, -0.2]], 'mean': [0.1, 0.2, -0.1, -0.2],
             'precision': np.eye(4).tolist()}
    settings = {'landmark_names': ['a', 'b'], 'input_size': [64, 64], 'bbox_padding': 1.1,
                'mean': [0.0] * 3, 'std': [1.0] * 3,
                'decoder': {'heatmap_size': [16, 16], 'unbiased': True, 'blur_kernel_size': 7},
                'error_calibration': {'expected_per_spread': [1.0] * 2,
                                      'radius90_per_spread': [2.0] * 2, 'images': 30,
                                      'shape': shape}}
    assert validate_settings(settings, 'model.pth')['error_calibration']['shape'] == shape
    settings['error_calibration']['shape'] = dict(shape, **broken)
    with pytest.raises(UserError, match='error_calibration shape must hold'):
        validate_settings(settings, 'model.pth')


def test_the_calibration_weighs_the_tracings_shapes_by_their_errors(tmp_path):
    """`fit_shape_term` on a prepared dataset: tracings bent out of the training shapes, with
    errors as large as the bend, get a weight and the larger deviations; a split without enough
    training tracings gets no shape prior."""
    from cephalometric.data.demo import write_demo_pickle
    from cephalometric.data.reader import load_split
    from cephalometric.evaluation.calibration import fit_shape_term
    from tests.helpers import run_script
    pickle_path = write_demo_pickle(tmp_path / 'demo.pkl', num_patients=130, seed=5)
    prepared = tmp_path / 'prepared'
    run_script('prepare_cephalometric_data.py', '--input', pickle_path, '--out-dir', prepared)
    truth = load_split(str(prepared), 'train').keypoints[:60]
    rng = np.random.default_rng(6)
    bend = np.repeat(rng.uniform(0, 8, (60, 1)), truth.shape[1], 1)   # px, per tracing
    traced = truth + rng.normal(0, 1, truth.shape) * bend[..., None]
    errors = np.linalg.norm(traced - truth, axis=-1)
    shape = fit_shape_term(str(prepared), list(traced), errors, np.ones_like(errors))
    assert shape is not None and shape['weight'] > 0
    assert shape['deviations'].shape == (60, 1)
    from scipy.stats import spearmanr
    assert spearmanr(shape['deviations'][:, 0], bend[:, 0]).correlation > 0.5
    few = tmp_path / 'few'
    run_script('prepare_cephalometric_data.py', '--input',
               write_demo_pickle(tmp_path / 'few.pkl', num_patients=24, seed=1), '--out-dir', few)
    assert fit_shape_term(str(few), list(traced), errors, np.ones_like(errors)) is None


def test_a_dataset_without_a_train_split_gets_no_shape_prior(tmp_path):
    from cephalometric.evaluation.calibration import fit_shape_term
    errors = np.ones((4, 19))
    assert fit_shape_term(str(tmp_path), [np.zeros((19, 2))] * 4, errors, errors) is None


def test_a_tracing_without_a_deviation_keeps_its_heatmap_signal():
    from cephalometric.prediction.heatmaps import error_signal
    spread = np.array([[3.0, 4.0], [3.0, 4.0]])
    deviation = np.array([[4.0], [np.nan]])     # the second tracing lacks a point
    signal = error_signal(spread, shape_deviation=deviation, shape_weight=1.0)
    assert np.allclose(signal, [[5.0, np.hypot(4, 4)], [3.0, 4.0]])
    assert np.allclose(error_signal(spread, shape_deviation=deviation, shape_weight=0.0), spread)
