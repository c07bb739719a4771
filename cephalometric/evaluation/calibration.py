"""Stated errors that match real ones: the calibration measured after training, and the numbers
evaluate.py reports about confidence.

`calibrate_checkpoint` predicts the validation split after training and stores in best_MRE.pth
how each landmark's error signal (the heatmap spread; when the refinement model is kept, that
model's own uncertainty combined with its shift of the point: `prediction.heatmaps.error_signal`)
scales into its expected error and its 90% radius (the ratio of real error to that signal: its
mean, and its 90th percentile), so that inference can say how far off each point probably is.
With the training annotations at hand it also stores their shape prior (`model.shape_prior`):
how far the tracing's points lie from where the others put them joins every landmark's signal,
with the weight the validation errors fit best (`shape_weight`).
The other functions are pure: `expected` and `actual` are (N images, K landmarks) errors in one
unit, `radius90` the stated 90% radii; NaN entries (a landmark without truth or without a
statement) are left out of every number.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np

from cephalometric.errors import UserError

# Per-landmark ratios are pulled towards the ratio pooled over all landmarks as if the pool
# counted this many images: a validation split of 30 images gives a noisy 90th percentile alone.
POOL_WEIGHT = 20
# Resamples of the images behind each confidence figure's 90% interval (`bootstrap_intervals`).
BOOTSTRAP_ROUNDS = 1000
# Weights of the shape deviation tried by `shape_weight` (0: none; then 1/4 to 16, 25 steps).
SHAPE_WEIGHTS = (0.0, *np.geomspace(0.25, 16.0, 25))


def spread_ratios(errors: np.ndarray, spreads: np.ndarray) -> dict:
    """The error calibration from validation errors and spreads (N, K), both image pixels:
    {'expected_per_spread': [K], 'radius90_per_spread': [K], 'images': N}."""
    ratio = np.asarray(errors, np.float64) / np.asarray(spreads, np.float64)
    ratio[~np.isfinite(ratio)] = np.nan
    pooled = ratio[np.isfinite(ratio)]
    if pooled.size == 0:
        raise ValueError('no landmark with both a true position and a finite spread')
    pooled_mean, pooled_q90 = float(pooled.mean()), float(np.quantile(pooled, 0.9))
    expected, radius = [], []
    for column in ratio.T:
        column = column[np.isfinite(column)]
        n = len(column)
        mean = column.mean() if n else pooled_mean
        q90 = np.quantile(column, 0.9) if n else pooled_q90
        expected.append((n * mean + POOL_WEIGHT * pooled_mean) / (n + POOL_WEIGHT))
        radius.append((n * q90 + POOL_WEIGHT * pooled_q90) / (n + POOL_WEIGHT))
    return {'expected_per_spread': [max(float(v), 1e-6) for v in expected],
            'radius90_per_spread': [max(float(v), 1e-6) for v in radius],
            'images': int(ratio.shape[0])}


def fit_interval_scale(names: Sequence[str], predicted, radius90, truth) -> dict:
    """{measurement: factor} that makes each measurement's 90% interval (`uncertainty`'s
    propagation of the radii `radius90`) hold 90% of the true values: the 90th percentile of
    |predicted - true| / stated standard deviation over the images, divided by the normal's 1.645,
    pulled towards the factor pooled over all measurements as the error ratios are (POOL_WEIGHT).
    `predicted`, `truth`: (N, K, 2) landmarks (NaN: no position); `radius90`: (N, K) px."""
    from cephalometric.measurements import compute_measurements
    from cephalometric.uncertainty import _Z90, measurement_spread
    ratios = {}
    for points, radii, true_points in zip(predicted, radius90, truth):
        values, spread = measurement_spread(names, points, radii)
        true_values = compute_measurements(names, true_points)
        for key, sd in spread.items():
            true_value = true_values.get(key)
            if sd > 0 and isinstance(true_value, (int, float)) and np.isfinite(true_value):
                ratios.setdefault(key, []).append(abs(values[key] - true_value) / sd)
    if not ratios:
        return {}
    pooled = float(np.quantile(np.concatenate(list(ratios.values())), 0.9)) / _Z90
    scale = {}
    for key, column in ratios.items():
        n, own = len(column), float(np.quantile(column, 0.9)) / _Z90
        scale[key] = max((n * own + POOL_WEIGHT * pooled) / (n + POOL_WEIGHT), 1e-3)
    return scale


def shape_weight(errors: np.ndarray, signals: np.ndarray, deviations: np.ndarray) -> float:
    """The weight of the shape deviation in the signal (`heatmaps.error_signal`) under which the
    validation errors are most likely, each landmark's error taken as Rayleigh distributed with a
    scale of its own factor times the combined signal (the factor at its best for each weight):
    a fit of the error model, not of the rank figures evaluate.py reports. 0: no weight helps."""
    errors, signals = np.asarray(errors, np.float64), np.asarray(signals, np.float64)
    deviations = np.broadcast_to(np.asarray(deviations, np.float64), errors.shape)
    usable = np.isfinite(errors) & np.isfinite(signals) & np.isfinite(deviations)
    best, best_likelihood = 0.0, -np.inf
    for weight in SHAPE_WEIGHTS:
        scale = np.hypot(signals, weight * deviations)
        likelihood = 0.0
        for column in range(errors.shape[1]):
            keep = usable[:, column] & (scale[:, column] > 0)
            if not keep.any():
                continue
            error, sigma = errors[keep, column], scale[keep, column]
            factor = np.mean(error ** 2 / (2 * sigma ** 2))   # the best factor, squared
            if factor <= 0:
                continue
            likelihood += float(np.sum(-np.log(factor * sigma ** 2)
                                       - error ** 2 / (2 * factor * sigma ** 2)))
        if likelihood > best_likelihood:
            best, best_likelihood = float(weight), likelihood
    return best


def fit_shape_term(data_root: str, predicted, errors: np.ndarray,
                   signals: np.ndarray) -> Optional[dict]:
    """The shape prior of the training annotations (`model.shape_prior`) with its fitted weight
    (`shape_weight`) and the validation tracings' `deviations` (N, 1), or None: no training
    annotations, too few complete ones, or a weight of 0."""
    from cephalometric.data.reader import load_split
    from cephalometric.model.shape_prior import fit_shape_prior
    try:
        train = load_split(data_root, 'train')
    except UserError:
        return None
    prior = fit_shape_prior(train.keypoints, train.visible)
    if prior is None:
        return None
    deviations = np.array([[prior.deviation(points)] for points in predicted])
    weight = shape_weight(errors, signals, deviations)
    if weight <= 0:
        return None
    return dict(weight=weight, **prior.to_dict(), deviations=deviations)


def calibrate_checkpoint(checkpoint: str, data_root: str, split: str = 'val',
                         batch_size: int = 8) -> Optional[dict]:
    """Measure the error calibration of `checkpoint` on `split` of `data_root` (whole image as the
    face box, as validation) and store it in the checkpoint; returns it (None: no images), with
    `refinement`: the validation MRE with and without the refinement model and whether it was
    kept (`model.checkpoint.check_refine_model`), or None when the checkpoint has none."""
    from cephalometric.data.reader import load_split
    from cephalometric.evaluation.statistics import predict_split_all
    from cephalometric.model.checkpoint import check_refine_model, set_error_calibration
    from cephalometric.prediction.heatmaps import error_signal
    from cephalometric.prediction.predictor import LandmarkPredictor
    data = load_split(data_root, split)
    if not data.patient_ids:
        return None
    predictor = LandmarkPredictor(checkpoint, device='cpu')

    def errors_of(predictions):
        predicted = np.stack([p.keypoints for p in predictions])
        return np.where(data.visible, np.linalg.norm(predicted - data.keypoints, axis=-1), np.nan)
    predictions = predict_split_all(predictor, data.image_paths, batch_size, data.depth_paths)
    coarse, refinement = predictions, None
    if predictor.refiner is not None:
        # The refinement model is kept only if it lowers the validation MRE (a short run on few
        # images can leave it worse than the landmark model it refines).
        coarse = predict_split_all(predictor.coarse_predictor(), data.image_paths, batch_size,
                                   data.depth_paths)
        refinement = dict(with_refinement=float(np.nanmean(errors_of(predictions))),
                          without=float(np.nanmean(errors_of(coarse))))
        refinement['kept'] = check_refine_model(checkpoint, **refinement)
        if not refinement['kept']:
            predictions = coarse
    errors = errors_of(predictions)
    spreads = np.stack([p.spread for p in predictions])
    shifts = uncertainty = None
    signal = 'spread'
    if refinement is not None and refinement['kept']:
        # how far the refinement model moved each point, and how sure its own finer heatmap is
        # (`prediction.heatmaps.error_signal`)
        shifts = np.linalg.norm(np.stack([p.keypoints for p in predictions])
                                - np.stack([p.keypoints for p in coarse]), axis=-1)
        uncertainty = np.stack([p.refine_uncertainty for p in predictions])
        signal = 'refine_uncertainty_and_shift'
    signals = error_signal(spreads, shifts, signal, uncertainty)
    shape = fit_shape_term(data_root, [p.keypoints for p in predictions], errors, signals)
    if shape is not None:
        signals = error_signal(spreads, shifts, signal, uncertainty, shape.pop('deviations'),
                               shape['weight'])
    calibration = dict(spread_ratios(errors, signals), split=split, signal=signal,
                       **({} if shape is None else {'shape': shape}))
    truth = np.where(data.visible[..., None], data.keypoints, np.nan)
    calibration['interval_scale'] = fit_interval_scale(
        data.names, [p.keypoints for p in predictions],
        signals * np.asarray(calibration['radius90_per_spread']), truth)
    face_check = None
    if predictor.framing_network is not None:
        found = predict_split_all(predictor.framing_predictor(), data.image_paths, batch_size,
                                  data.depth_paths)
        # (a framing model of both directions reads the direction from its landmarks instead)
        both_sides = (predictor.settings.get('framing_prior') or {}).get('facing') is not None
        mirrored = None if both_sides else predict_split_all(
            predictor.framing_predictor(), data.image_paths, batch_size, data.depth_paths,
            mirrored=True)
        # framing compares the framing model with the landmark model's own (unrefined) positions
        face_check = measure_face_check(coarse, found, mirrored)
    set_error_calibration(checkpoint, calibration, face_check)
    return dict(calibration, refinement=refinement)


def measure_face_check(measured, found, mirrored=None) -> Optional[dict]:
    """What correctly framed faces give (`framing.FaceFramer` flags a photograph beyond it): the
    1st percentile of the landmark model's mean confidence and the 99th of the framing and the
    landmark model's disagreement (mean landmark distance / box width) on the validation crops.
    `measured`, `found`: the two models' predictions of the same images. `mirrored`: the framing
    model's predictions of them mirrored, whose highest mean confidence (`mirrored_score_ceiling`)
    a photograph must beat for framing to skip looking at it mirrored."""
    scores = np.array([np.nanmean(p.scores) for p in measured])
    from cephalometric.prediction.framing import models_disagreement
    disagreement = np.array([models_disagreement(m.keypoints, f.keypoints, m.bbox[2])
                             for m, f in zip(measured, found)])
    keep = np.isfinite(scores) & np.isfinite(disagreement)
    if not keep.any():
        return None
    check = {'landmark_score_floor': float(np.percentile(scores[keep], 1)),
             'disagreement_ceiling': max(float(np.percentile(disagreement[keep], 99)), 1e-3),
             'images': int(keep.sum())}
    # the typical face, for the joint check (framing.JOINT_MARGIN)
    check['landmark_score_median'] = float(np.median(scores[keep]))
    check['disagreement_median'] = min(float(np.median(disagreement[keep])),
                                       check['disagreement_ceiling'])
    other_side = np.array([np.nanmean(p.scores) for p in mirrored or []])
    if np.isfinite(other_side).any():
        check['mirrored_score_ceiling'] = float(np.nanmax(other_side))
    return check


def _spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    from scipy.stats import spearmanr
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return None
    return float(spearmanr(a[keep], b[keep]).correlation)


def error_calibration(expected, actual, radius90) -> dict:
    """Spearman of expected against actual error (over all landmark positions, and of the per-image
    means), the share of true positions inside the 90% radius, and how many of the worst 10% of
    images (by actual mean error) are among the top 20% by expected mean error."""
    expected, actual, radius90 = (np.asarray(v, np.float64) for v in (expected, actual, radius90))
    per_image_expected = np.nanmean(np.where(np.isfinite(actual), expected, np.nan), axis=1)
    per_image_actual = np.nanmean(actual, axis=1)
    known = np.isfinite(actual) & np.isfinite(radius90)
    result = {
        'spearman_landmarks': _spearman(expected.ravel(), actual.ravel()),
        'spearman_images': _spearman(per_image_expected, per_image_actual),
        'radius90_coverage': float(np.mean(actual[known] <= radius90[known])) if known.any()
        else None,
        'worst10_in_top20': worst_in_top(per_image_expected, per_image_actual),
        'images_split_half': split_half_consistency(actual),
    }
    # How far these figures could move on another set of images like these: on 30 images the
    # per-image Spearman's interval can be 0.5 wide (docs/evaluation.md, Confidence).
    intervals = bootstrap_intervals(lambda rows: (
        _spearman(expected[rows].ravel(), actual[rows].ravel()),
        _spearman(per_image_expected[rows], per_image_actual[rows]),
        float(np.mean(actual[rows][known[rows]] <= radius90[rows][known[rows]]))
        if known[rows].any() else None), len(actual))
    for key, interval in zip(('spearman_landmarks', 'spearman_images', 'radius90_coverage'),
                             intervals):
        result[f'{key}_interval'] = interval
    return result


def bootstrap_intervals(statistics, count: int, rounds: int = BOOTSTRAP_ROUNDS,
                        seed: int = 0) -> list:
    """The 90% bootstrap interval ([5th, 95th] percentile, or None) of each figure that
    `statistics(rows)` returns, over `rounds` resamples of the `count` images (rows) with
    replacement; seeded, so a report is repeatable."""
    rng = np.random.default_rng(seed)
    samples = [statistics(rng.integers(0, count, count)) for _ in range(rounds)] if count else []
    intervals = []
    for values in zip(*samples) if samples else ():
        finite = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
        intervals.append([float(np.percentile(finite, 5)), float(np.percentile(finite, 95))]
                         if len(finite) >= rounds // 2 else None)
    return intervals


def split_half_consistency(actual: np.ndarray) -> Optional[float]:
    """How much of an image's error is the image's own: the Spearman correlation, over images,
    of the mean error on its even-numbered landmarks against that on its odd-numbered ones (each
    landmark's error divided by that landmark's mean, so hard landmarks do not weigh more).

    Near 0, the per-image means differ by chance alone and no statement, however good, can rank
    them (the per-image Spearman then says nothing about the model); near 1, some images are
    harder throughout and a good statement should find them."""
    with warnings.catch_warnings():
        # a landmark without any truth, or an image without either half, gives NaN: left out
        warnings.simplefilter('ignore', RuntimeWarning)
        normalised = np.asarray(actual, np.float64) / np.nanmean(actual, axis=0)
        normalised[~np.isfinite(normalised)] = np.nan
        even, odd = np.nanmean(normalised[:, ::2], axis=1), np.nanmean(normalised[:, 1::2], axis=1)
    return _spearman(even, odd)


def worst_in_top(expected: np.ndarray, actual: np.ndarray, worst: float = 0.1,
                 top: float = 0.2) -> Optional[float]:
    """Share of the `worst` fraction of images by actual error that rank in the `top` fraction by
    expected error (1.0: every bad image would be reviewed first)."""
    keep = np.isfinite(expected) & np.isfinite(actual)
    expected, actual = expected[keep], actual[keep]
    if len(actual) < 5:
        return None
    bad = np.argsort(-actual)[:max(1, int(round(worst * len(actual))))]
    first = set(np.argsort(-expected)[:max(1, int(round(top * len(actual))))].tolist())
    return float(np.mean([i in first for i in bad]))


def interval_coverage(intervals: Sequence, truth: Sequence) -> Optional[float]:
    """Share of true values inside their [low, high] (pairs with a missing side are left out)."""
    hits = [low <= value <= high for (low, high), value in zip(intervals, truth)
            if low is not None and high is not None and value is not None
            and np.isfinite([low, high, value]).all()]
    return float(np.mean(hits)) if hits else None


def brier_score(probabilities: Sequence[dict], truth: Sequence, classes=(1, 2, 3)) \
        -> Optional[float]:
    """Mean squared difference between class probabilities and the true class (0 is perfect,
    0.67 is a uniform guess over three classes); images without either are left out."""
    scores = []
    for probability, true_class in zip(probabilities, truth):
        if not probability or true_class is None:
            continue
        scores.append(sum((float(probability.get(c, 0.0)) - (c == true_class)) ** 2
                          for c in classes))
    return float(np.mean(scores)) if scores else None


def reliability(probabilities: Sequence[dict], truth: Sequence, bins: int = 5) -> list[dict]:
    """Reliability-diagram points: per bin of stated probability (of every class of every
    image), the mean stated probability, how often that class was the true one, and how many."""
    stated, happened = [], []
    for probability, true_class in zip(probabilities, truth):
        if not probability or true_class is None:
            continue
        for c, p in probability.items():
            stated.append(float(p))
            happened.append(float(int(c) == true_class))
    stated, happened = np.asarray(stated), np.asarray(happened)
    points = []
    edges = np.linspace(0, 1, bins + 1)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (stated >= low) & ((stated < high) | (high == 1.0))
        if inside.any():
            points.append({'stated': float(stated[inside].mean()),
                           'observed': float(happened[inside].mean()),
                           'count': int(inside.sum())})
    return points


def confidence_numbers(split, predictions: Sequence, thresholds=(0.0, 4.0)) -> Optional[dict]:
    """evaluate.py's confidence section for predictions of `split` (None when the checkpoint has
    no error calibration): `error_calibration` in pixels, the coverage of the 90% ANB interval
    (truth: ANB of the true landmarks), the Brier score and reliability points of the class
    probabilities (truth: the recorded class, else the class of the true landmarks)."""
    from cephalometric.measurements import compute_measurements, skeletal_class
    from cephalometric.uncertainty import tracing_certainty
    if not predictions or getattr(predictions[0], 'radius90', None) is None:
        return None
    predicted = np.stack([p.keypoints for p in predictions])
    actual = np.where(split.visible, np.linalg.norm(predicted - split.keypoints, axis=-1), np.nan)
    numbers = error_calibration(np.stack([p.expected_error for p in predictions]), actual,
                                np.stack([p.radius90 for p in predictions]))
    anb_intervals, true_anb, probabilities, true_class = [], [], [], []
    for i, prediction in enumerate(predictions):
        certainty = tracing_certainty(split.names, prediction.keypoints, prediction.radius90,
                                      thresholds=thresholds,
                                      interval_scale=prediction.interval_scale)
        truth = compute_measurements(split.names, split.keypoints[i], class_thresholds=thresholds)
        anb_intervals.append(certainty['intervals'].get('ANB', (None, None)))
        true_anb.append(truth.get('ANB'))
        probabilities.append({int(k): v for k, v in
                              certainty.get('class_probabilities', {}).items()})
        recorded = split.skeletal_class[i]
        true_class.append(recorded if recorded is not None else (
            skeletal_class(truth['ANB'], thresholds) if 'ANB' in truth else None))
    numbers.update(anb_interval_coverage=interval_coverage(anb_intervals, true_anb),
                   class_brier=brier_score(probabilities, true_class),
                   class_reliability=reliability(probabilities, true_class),
                   num_images=len(predictions))
    return numbers


def plot_reliability(path: str, points: Sequence[dict]) -> None:
    """The reliability diagram of the class probabilities: stated against observed frequency."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(4.5, 4.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color='0.6', linestyle='--', label='perfectly calibrated')
    axes.plot([p['stated'] for p in points], [p['observed'] for p in points], marker='o',
              label='this model')
    for p in points:
        axes.annotate(str(p['count']), (p['stated'], p['observed']), textcoords='offset points',
                      xytext=(4, -10), fontsize=7)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel='stated class probability',
             ylabel='how often that class was the true one', title='Class probabilities')
    axes.legend(loc='upper left', fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
