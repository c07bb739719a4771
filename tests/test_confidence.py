"""Expected errors end to end: heatmap spread, the calibration stored in the checkpoint and the
.onnx, the JSON/CSV fields, the review order, and checkpoints without a calibration."""
import json

import numpy as np
import pytest

from cephalometric.evaluation.calibration import spread_ratios
from cephalometric.prediction.heatmaps import heatmap_spread


def gaussian(size, centre, sigma):
    ys, xs = np.mgrid[:size, :size]
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))


def test_a_smeared_or_doubled_peak_spreads_more_than_a_sharp_one():
    sharp = gaussian(32, (12, 12), 1.5)
    maps = np.stack([sharp, gaussian(32, (12, 12), 3.0), sharp + 0.9 * gaussian(32, (15, 12), 1.5),
                     np.full((32, 32), np.nan)])[None].astype(np.float32)
    spread = heatmap_spread(maps)[0]
    assert spread[0] == pytest.approx(1.5 * np.sqrt(2), rel=0.05)   # 2-D RMS of a Gaussian
    assert spread[1] > 1.3 * spread[0] and spread[2] > 1.1 * spread[0]
    assert np.isnan(spread[3])


def test_spread_ratios_recover_a_known_scale_and_pool_sparse_landmarks():
    rng = np.random.default_rng(0)
    spreads = rng.uniform(1, 3, (40, 3))
    errors = 2.0 * spreads
    errors[:, 2] = np.nan                        # a landmark never annotated: the pooled ratio
    calibration = spread_ratios(errors, spreads)
    assert calibration['expected_per_spread'] == pytest.approx([2.0, 2.0, 2.0])
    assert calibration['radius90_per_spread'] == pytest.approx([2.0, 2.0, 2.0])
    assert calibration['images'] == 40
    with pytest.raises(ValueError):
        spread_ratios(np.full((3, 2), np.nan), np.ones((3, 2)))


@pytest.fixture(scope='module')
def calibrated(tmp_path_factory):
    """A random-weight checkpoint with an error calibration, and its ONNX export."""
    import benchmark
    from cephalometric.model.checkpoint import set_error_calibration, write_published_checkpoint
    from cephalometric.prediction.export import export_checked
    from cephalometric.prediction.predictor import LandmarkPredictor
    root = tmp_path_factory.mktemp('calibrated')
    plain = benchmark.random_checkpoint(str(root / 'plain.pth'), 64)
    # today's published layout (settings as data), then the calibration added to it
    reference = LandmarkPredictor(plain, device='cpu')
    from cephalometric.model.checkpoint import load_checkpoint_file
    data = load_checkpoint_file(plain)
    meta = dict(data['meta'], inference=reference.settings)
    path = str(root / 'best_MRE.pth')
    write_published_checkpoint(path, meta, data['state_dict'])
    count = len(reference.names)
    set_error_calibration(path, {'expected_per_spread': [1.5] * count,
                                 'radius90_per_spread': list(np.linspace(2, 4, count)),
                                 'images': 30, 'split': 'val',
                                 'interval_scale': {'ANB': 0.6, 'SNA': 1.25}},
                          {'landmark_score_floor': 0.42, 'disagreement_ceiling': 0.03,
                           'images': 30, 'mirrored_score_ceiling': 0.55,
                           'landmark_score_median': 0.7, 'disagreement_median': 0.01})
    export_checked(path, str(root / 'model.onnx'))
    image = (np.random.default_rng(1).uniform(0, 255, (96, 80, 3))).astype(np.uint8)
    return root, path, image


def test_the_calibration_survives_the_checkpoint_and_onnx_round_trips(calibrated):
    from cephalometric.prediction.predictor import LandmarkPredictor
    root, path, image = calibrated
    ours = LandmarkPredictor(path, device='cpu').predict([image], 'full')[0]
    onnx = LandmarkPredictor(str(root / 'model.onnx'), device='cpu').predict([image], 'full')[0]
    assert ours.radius90 is not None and onnx.radius90 is not None
    ratios = np.linspace(2, 4, len(ours.names))
    assert ours.radius90 == pytest.approx(ours.spread * ratios)
    assert ours.expected_error == pytest.approx(ours.spread * 1.5)
    assert np.abs(onnx.radius90 - ours.radius90).max() < 0.1
    # the measurement intervals' factors too
    assert ours.interval_scale == onnx.interval_scale == {'ANB': 0.6, 'SNA': 1.25}
    # the face check that automatic framing flags photographs by travels with it
    for predictor in (LandmarkPredictor(path, device='cpu'),
                      LandmarkPredictor(str(root / 'model.onnx'), device='cpu')):
        assert predictor.settings['face_check'] == {
            'landmark_score_floor': 0.42, 'disagreement_ceiling': 0.03, 'images': 30,
            'mirrored_score_ceiling': 0.55, 'landmark_score_median': 0.7,
            'disagreement_median': 0.01}


def test_the_framing_model_gets_no_expected_errors(calibrated):
    """The calibration was measured on the landmark model: framing's passes of the framing model
    state none (and spend nothing on them); the landmark model's still do."""
    from cephalometric.prediction.predictor import LandmarkPredictor
    root, path, image = calibrated
    plain = LandmarkPredictor(path, device='cpu')
    predictor = LandmarkPredictor.from_backend(plain.settings, plain.network,
                                               framing_network=plain.network)
    finder = predictor.framing_predictor()
    assert finder is not predictor and 'error_calibration' in predictor.settings
    assert predictor([image])[0].expected_error is not None
    found = finder([image])[0]
    assert found.expected_error is None and found.radius90 is None
    assert np.allclose(found.keypoints, predictor([image])[0].keypoints)


def test_a_shape_prior_travels_and_adds_how_unusual_the_tracing_is(calibrated, tmp_path):
    """A calibration with a shape prior states hypot(spread, weight x the tracing's deviation)
    times the landmark's factor, from the checkpoint and from its ONNX export alike."""
    import shutil

    from cephalometric.model.checkpoint import set_error_calibration
    from cephalometric.model.shape_prior import fit_shape_prior
    from cephalometric.prediction.export import export_checked
    from cephalometric.prediction.predictor import LandmarkPredictor
    root, path, image = calibrated
    shaped = str(tmp_path / 'best_MRE.pth')
    shutil.copy(path, shaped)
    count = len(LandmarkPredictor(path, device='cpu').names)
    rng = np.random.default_rng(4)
    template = rng.uniform(0, 80, (count, 2))
    shapes = template + rng.normal(0, 2, (200, count, 2))
    prior = fit_shape_prior(shapes, np.ones((200, count), bool))
    set_error_calibration(shaped, {'expected_per_spread': [1.5] * count,
                                   'radius90_per_spread': [3.0] * count, 'images': 30,
                                   'shape': dict(weight=2.0, **prior.to_dict())})
    export_checked(shaped, str(tmp_path / 'model.onnx'))
    ours = LandmarkPredictor(shaped, device='cpu').predict([image], 'full')[0]
    onnx = LandmarkPredictor(str(tmp_path / 'model.onnx'), device='cpu').predict(
        [image], 'full')[0]
    deviation = prior.deviation(ours.keypoints)
    assert deviation > 0
    assert ours.expected_error == pytest.approx(1.5 * np.hypot(ours.spread, 2.0 * deviation))
    assert np.abs(onnx.expected_error - ours.expected_error).max() < 0.1
    # a tracing like no training shape is less sure than the same heatmaps on a usual one
    usual, _ = LandmarkPredictor(shaped, device='cpu').expected_errors(
        ours.spread, keypoints=template)
    assert (ours.expected_error > usual).all()


@pytest.mark.parametrize('scale', [{'ANB': -1.0}, {'ANB': float('nan')}, {'__import__("os")': 1.0},
                                   ['ANB', 1.0], {f'm{i}': 1.0 for i in range(100)}])
def test_an_impossible_interval_scale_is_one_line(scale):
    from cephalometric.errors import UserError
    from cephalometric.model.settings import validate_settings
    settings = {'landmark_names': ['a'], 'input_size': [64, 64], 'bbox_padding': 1.1,
                'mean': [0.0] * 3, 'std': [1.0] * 3,
                'decoder': {'heatmap_size': [16, 16], 'unbiased': True, 'blur_kernel_size': 7},
                'error_calibration': {'expected_per_spread': [1.0], 'radius90_per_spread': [2.0],
                                      'images': 30, 'interval_scale': scale}}
    with pytest.raises(UserError, match='interval_scale must map'):
        validate_settings(settings, 'model.pth')
    del settings['error_calibration']['interval_scale']   # older calibrations have none
    assert 'interval_scale' not in validate_settings(settings, 'model.pth')['error_calibration']


@pytest.mark.parametrize('face_check', [
    {'landmark_score_floor': 2.0, 'disagreement_ceiling': 0.03},
    {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.0},
    {'landmark_score_floor': float('nan'), 'disagreement_ceiling': 0.03},
    {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.03, 'images': -1},
    {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.03, 'mirrored_score_ceiling': 1.5},
    {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.03, 'landmark_score_median': 0.4,
     'disagreement_median': 0.01},
    {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.03, 'landmark_score_median': 0.7,
     'disagreement_median': 0.05},
    {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.03, 'landmark_score_median': 0.7},
    'not a mapping'])
def test_an_impossible_face_check_is_one_line(face_check):
    from cephalometric.errors import UserError
    from cephalometric.model.settings import validate_settings
    base = {'landmark_names': ['a', 'b'], 'input_size': [64, 64], 'bbox_padding': 1.1,
            'mean': [0, 0, 0], 'std': [1, 1, 1],
            'decoder': {'heatmap_size': [16, 16], 'unbiased': True, 'blur_kernel_size': 11}}
    assert 'face_check' not in validate_settings(base, 'model.pth')
    check = {'landmark_score_floor': 0.5, 'disagreement_ceiling': 0.03, 'images': 9,
             'mirrored_score_ceiling': 0.6, 'landmark_score_median': 0.7,
             'disagreement_median': 0.01}
    assert validate_settings(dict(base, face_check=check), 'model.pth')['face_check'] == check
    with pytest.raises(UserError, match='face_check'):
        validate_settings(dict(base, face_check=face_check), 'model.pth')


def test_inference_reports_expected_errors_intervals_and_class_probabilities(calibrated, tmp_path):
    from cephalometric.errors import run_cli
    from cephalometric.prediction.inference import main
    root, path, image = calibrated
    import cv2
    photo = tmp_path / 'photo.png'
    cv2.imwrite(str(photo), image)
    assert run_cli(main, ['--checkpoint', path, '--img-path', str(photo), '--bbox', 'full',
                          '--json', str(tmp_path / 'out.json'), '--csv', str(tmp_path / 'out.csv'),
                          '--out-file', str(tmp_path / 'out.jpg'), '--mm-per-pixel', '0.5']) == 0
    record = json.loads((tmp_path / 'out.json').read_text())
    assert record['errors_calibrated'] is True
    landmark = record['landmarks'][0]
    assert landmark['radius90_mm'] == pytest.approx(landmark['radius90_px'] * 0.5, abs=0.01)
    assert 'ANB' in record['certainty']['intervals']
    low, high = record['certainty']['intervals']['ANB']
    assert low <= record['measurements']['ANB'] <= high
    header = (tmp_path / 'out.csv').read_text().splitlines()[0].split(',')
    assert 'ANB_low' in header and 'p_class_1' in header and f'{landmark["name"]}_radius90_px' \
        in header


def test_a_checkpoint_without_calibration_predicts_and_says_so(calibrated, tmp_path):
    from cephalometric.prediction.predictor import LandmarkPredictor
    from cephalometric.prediction.results import image_record
    root, _, image = calibrated
    prediction = LandmarkPredictor(str(root / 'plain.pth'), device='cpu').predict(
        [image], 'full')[0]
    assert prediction.radius90 is None and prediction.spread is not None
    record = image_record('x.png', prediction, {}, score_threshold=0.3)
    assert record['errors_calibrated'] is False and 'certainty' not in record
    assert 'radius90_px' not in record['landmarks'][0]


def test_a_wide_radius_is_flagged_and_listed_first():
    from types import SimpleNamespace

    from cephalometric.prediction.results import image_record, review_radius
    names = ['sella', 'nasion']
    narrow = SimpleNamespace(names=names, keypoints=np.array([[10.0, 10.0], [50.0, 10.0]]),
                             scores=np.array([0.9, 0.9]), bbox=(0, 0, 100, 100), framing=None,
                             radius90=np.array([1.0, 1.0]), expected_error=np.array([0.5, 0.5]))
    assert review_radius((0, 0, 100, 100), None) == pytest.approx(2.0)
    assert review_radius((0, 0, 100, 100), 0.1) == pytest.approx(20.0)
    record = image_record('x', narrow, {}, score_threshold=0.3)
    assert [lm['review'] for lm in record['landmarks']] == [False, False]
    narrow.radius90 = np.array([1.0, 3.0])
    record = image_record('x', narrow, {}, score_threshold=0.3)
    assert [lm['review'] for lm in record['landmarks']] == [False, True]


def test_the_review_list_puts_the_largest_expected_error_first(tmp_path):
    """With an error calibration the review order is the widest 90% radius first (here the
    reverse of the order by score), and a wide radius is a point to check."""
    from cephalometric.review.store import ReviewStore
    from tests.test_review_clinic import StandIn, write_photos
    truth = write_photos(tmp_path / 'photos', count=3)
    widths = iter([1.0, 9.0, 3.0])          # per image, in the order they are predicted

    class Calibrated(StandIn):
        def predict(self, images):
            out = super().predict(images)
            for prediction in out:
                prediction.radius90 = np.full(len(prediction.names), next(widths))
                prediction.expected_error = prediction.radius90 / 2
                prediction.scores = np.full(len(prediction.names), 0.9)
            return out
    store = ReviewStore(str(tmp_path / 'photos'), str(tmp_path / 'reviewed'), Calibrated(truth),
                        log=lambda text: None, model={'file': 'm.pth', 'sha256': 'ab' * 32})
    listing = store.listing()
    assert [item['max_radius90'] for item in listing] == [9.0, 3.0, 1.0]
    assert [item['low_count'] for item in listing] == [19, 0, 0]     # 2% of 224 px = 4.48 px
    assert store.detail(listing[0]['name'])['unsure'] == [True] * 19


def test_the_review_page_states_intervals_that_narrow_where_the_reviewer_placed_a_point(
        tmp_path):
    """The review page's certainty: the model's 90% intervals and class probabilities for its
    tracing, recomputed for the reviewer's; a point the reviewer moved counts as exact, so the
    intervals it enters narrow. Nothing without a calibration, nor for a case that cannot be
    traced."""
    from cephalometric.landmarks import find_landmark
    from cephalometric.review.store import ReviewStore
    from tests.test_review_clinic import StandIn, write_photos
    truth = write_photos(tmp_path / 'photos', count=1)

    class Calibrated(StandIn):
        def predict(self, images):
            out = super().predict(images)
            for prediction in out:
                prediction.radius90 = np.full(len(prediction.names), 3.0)
                prediction.interval_scale = {'SNB': 0.5}
            return out
    store = ReviewStore(str(tmp_path / 'photos'), str(tmp_path / 'reviewed'), Calibrated(truth),
                        log=lambda text: None, model={'file': 'm.pth', 'sha256': 'ab' * 32})
    name = store.listing()[0]['name']
    detail = store.detail(name)
    certainty = detail['certainty']
    low, high = certainty['intervals']['ANB']
    assert low < detail['measurements']['ANB'] < high
    assert sum(certainty['class_probabilities'].values()) == pytest.approx(1.0, abs=0.02)
    assert isinstance(certainty['class_borderline'], bool)
    case = store.case(name)
    points = np.array(detail['points'])
    points[find_landmark(store.names, 'a point')] += [1.5, 0.0]    # the reviewer moves A point
    moved = store.certainty(case, points)['intervals']
    width = {key: pair[1] - pair[0] for key, pair in certainty['intervals'].items()}
    assert moved['ANB'][1] - moved['ANB'][0] < 0.9 * width['ANB']
    assert moved['SNB'][1] - moved['SNB'][0] == pytest.approx(width['SNB'], rel=1e-3, abs=0.02)
    # the calibration's factor: SNB's interval is half what the radii alone give
    plain = Calibrated(truth)
    plain.predict = lambda images: [setattr(p, 'interval_scale', None) or p
                                    for p in Calibrated.predict(plain, images)]
    unscaled = ReviewStore(str(tmp_path / 'photos'), str(tmp_path / 'other'), plain,
                           log=lambda text: None).detail(name)['certainty']['intervals']
    assert width['SNB'] == pytest.approx(0.5 * (unscaled['SNB'][1] - unscaled['SNB'][0]),
                                         abs=0.02)
    case.status = 'cannot trace'
    assert store.certainty(case, points) is None
    # a point the model gave no position for has no radius: no intervals until it is placed
    unplaced = ReviewStore(str(tmp_path / 'photos'), str(tmp_path / 'unplaced'),
                           Calibrated(truth, nan_landmarks=[find_landmark(store.names, 'a point')]),
                           log=lambda text: None)
    assert unplaced.detail(name)['certainty'] is None
    placed = np.array(unplaced.detail(name)['points'])
    placed[find_landmark(store.names, 'a point')] = points[find_landmark(store.names, 'a point')]
    assert 'ANB' in unplaced.certainty(unplaced.case(name), placed)['intervals']
    bare = ReviewStore(str(tmp_path / 'photos'), str(tmp_path / 'bare'), StandIn(truth),
                       log=lambda text: None)
    assert bare.detail(name)['certainty'] is None


def test_training_stores_a_calibration_and_evaluate_measures_it(trained_run, demo_dataset,
                                                                 tmp_path):
    from cephalometric.data.reader import load_split
    from cephalometric.model.checkpoint import load_published
    from tests.helpers import run_script
    _, prepared = demo_dataset
    published = load_published(str(trained_run / 'best_MRE.pth'))
    calibration = published.settings['error_calibration']
    assert calibration['images'] == len(load_split(str(prepared), 'val').patient_ids)
    # the refinement model's shift is part of what is scaled exactly when that model was kept
    kept = published.refine_state_dict is not None
    assert calibration['signal'] == ('refine_uncertainty_and_shift' if kept else 'spread')
    # every measurement interval has its factor, measured on the same validation tracings
    assert {'ANB', 'SNA', 'SNB'} <= set(calibration['interval_scale'])
    out = tmp_path / 'eval'
    run_script('evaluate.py', '--checkpoint', trained_run / 'best_MRE.pth', '--data-root',
               prepared, '--out-dir', out, '--worst', '0')
    confidence = json.loads((out / 'metrics.json').read_text())['confidence']
    assert 0.0 <= confidence['radius90_coverage'] <= 1.0
    assert confidence['num_images'] == len(load_split(str(prepared), 'test').patient_ids)
    report = (out / 'report.md').read_text()
    assert '## Confidence' in report and 'split-half Spearman' in report
    assert 'images_split_half' in confidence
    # each figure's 90% interval over resamples of the images, in the JSON and the table
    low, high = confidence['radius90_coverage_interval']
    assert low <= confidence['radius90_coverage'] <= high
    assert f'[{100 * low:.1f}%, {100 * high:.1f}%]' in report
