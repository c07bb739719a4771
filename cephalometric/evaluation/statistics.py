"""Evaluation numbers: landmark errors, per-image MRE, worst cases, class agreement, measurements.

Pure functions of the predictions and the truth (a `data.reader.Split`): nothing here writes a
file or changes its arguments; `report` renders the result and evaluate.py writes it.
`predict_split_all` runs a LandmarkPredictor over a split's images, one batch at a time.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from cephalometric.data.images import read_rgb
from cephalometric.measurements import CLASS_NAMES, MEASUREMENTS, compute_measurements
from cephalometric.radial_error import radial_errors, summarize_radial_errors

CLASS_LABELS = (1, 2, 3)


def confusion_matrix(truth: Sequence, predicted: Sequence,
                     labels: Sequence[int] = CLASS_LABELS) -> np.ndarray:
    """Counts (len(labels), len(labels)): row = true label, column = predicted label.

    Pairs where either side is None or not one of `labels` are left out (an image whose class
    cannot be computed, or has no recorded class, says nothing about agreement).
    """
    if len(truth) != len(predicted):
        raise ValueError(f'{len(truth)} true labels but {len(predicted)} predicted')
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), int)
    for true, pred in zip(truth, predicted):
        if true in index and pred in index:
            matrix[index[true], index[pred]] += 1
    return matrix


def class_agreement(truth: Sequence, predicted: Sequence,
                    labels: Sequence[int] = CLASS_LABELS) -> dict:
    """{'n', 'accuracy' (fraction 0..1, None when n is 0), 'labels', 'confusion' (lists)}."""
    matrix = confusion_matrix(truth, predicted, labels)
    n = int(matrix.sum())
    return {'n': n,
            'accuracy': float(np.trace(matrix) / n) if n else None,
            'labels': [CLASS_NAMES.get(label, str(label)) for label in labels],
            'confusion': matrix.tolist()}


def error_values(errors_px: np.ndarray, visible: np.ndarray,
                 mm_per_pixel: np.ndarray) -> tuple[np.ndarray, str]:
    """The landmark errors that `summarize_radial_errors`' headline MRE averages, and their unit.

    Same rule as there: millimetres over the images with a spacing when any image has one,
    otherwise pixels over all images. Returns (1-D values, 'mm' or 'px').
    """
    errors_px = np.asarray(errors_px, float)
    visible = np.asarray(visible, bool) & np.isfinite(errors_px)
    spacing = np.asarray(mm_per_pixel, float).reshape(-1)
    has_spacing = np.isfinite(spacing) & (spacing > 0)
    if has_spacing.any():
        return (errors_px * np.where(has_spacing, spacing, np.nan)[:, None])[
            visible & has_spacing[:, None]], 'mm'
    return errors_px[visible], 'px'


def error_percentiles(values: np.ndarray, percentiles: Sequence[float] = (50, 90, 95)) -> dict:
    """{'p50': .., 'p90': .., 'p95': .., 'max': ..}; NaN for no values."""
    values = np.asarray(values, float)
    out = {f'p{q:g}': float(np.percentile(values, q)) if values.size else float('nan')
           for q in percentiles}
    out['max'] = float(values.max()) if values.size else float('nan')
    return out


def measurement_errors(truth: Sequence[Mapping[str, float]],
                       predicted: Sequence[Mapping[str, float]]) -> dict:
    """Prediction minus truth for every measurement both sides of an image have.

    `truth` and `predicted` hold one `compute_measurements` dict per image. Returns, in the order of
    MEASUREMENTS (the class is compared separately), {key: {'unit', 'n', 'MAE', 'mean_error',
    'max_abs_error'}}; mean_error is the signed bias, positive when predictions run larger.
    """
    out = {}
    for key, info in MEASUREMENTS.items():
        if key == 'skeletal_class':
            continue
        diffs = np.array([p[key] - t[key] for t, p in zip(truth, predicted)
                          if key in t and key in p], float)
        diffs = diffs[np.isfinite(diffs)]
        if diffs.size:
            out[key] = {'unit': info.unit, 'n': int(diffs.size),
                        'MAE': float(np.mean(np.abs(diffs))), 'mean_error': float(np.mean(diffs)),
                        'max_abs_error': float(np.max(np.abs(diffs)))}
    return out


def predict_split_all(predictor, image_paths, batch_size: int, depth_paths=None,
                      bbox='full', mirrored: bool = False) -> list:
    """The `Prediction` of every image; images are read one batch at a time to bound memory.
    `depth_paths`: one depth file per image, for an RGB-D model. `bbox`: 'full' (the whole image
    is the face box, as training validates) or 'auto' (`LandmarkPredictor.predict`). `mirrored`:
    of each image (and depth map) flipped left to right: the face looking the other way."""
    from cephalometric.data.depth import read_depth_file

    def shown(array):
        return np.ascontiguousarray(np.asarray(array)[:, ::-1]) if mirrored else array
    predictions = []
    for start in range(0, len(image_paths), batch_size):
        images = [shown(read_rgb(p)) for p in image_paths[start:start + batch_size]]
        depths = {} if depth_paths is None else {'depths': [
            shown(read_depth_file(p)) for p in depth_paths[start:start + batch_size]]}
        predictions += predictor.predict(images, bbox, batch_size=batch_size, **depths)
    return predictions


def per_image_mre(errors_px: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Mean error of each image's annotated landmarks, px; NaN for an image with none."""
    valid = visible & np.isfinite(errors_px)
    counts = valid.sum(axis=1)
    totals = np.where(valid, errors_px, 0.0).sum(axis=1)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def evaluate(split, predicted: np.ndarray, thresholds, baseline) -> tuple[np.ndarray, dict]:
    """The landmark errors behind the headline MRE, in its unit (for the distribution plot), and
    every number of the report keyed for metrics.json (NaN where undefined)."""
    names = split.names
    errors = radial_errors(predicted, split.keypoints)
    summary = summarize_radial_errors(errors, split.visible, split.mm_per_pixel, names)
    unit = 'mm' if 'MRE_mm' in summary else 'px'
    values, _ = error_values(errors, split.visible, split.mm_per_pixel)

    image_mre_px = per_image_mre(errors, split.visible)
    image_mre_mm = image_mre_px * split.mm_per_pixel

    spacing = [float(s) if np.isfinite(s) and s > 0 else None for s in split.mm_per_pixel]
    truth_m = [compute_measurements(names, k, s, thresholds)
               for k, s in zip(split.keypoints, spacing)]
    pred_m = [compute_measurements(names, k, s, thresholds) for k, s in zip(predicted, spacing)]
    truth_class = [m.get('skeletal_class') for m in truth_m]
    pred_class = [m.get('skeletal_class') for m in pred_m]
    recorded = split.skeletal_class
    has_recorded = any(c is not None for c in recorded)

    return values, {
        'num_images': len(split.patient_ids),
        'num_landmarks': len(names),
        'unit': unit,
        'overall': {k: v for k, v in summary.items() if '/' not in k},
        'error_percentiles': {'unit': unit, **error_percentiles(values)},
        'per_landmark': {name: {'MRE': summary[f'MRE/{name}'],
                                'MRE_mm': summary.get(f'MRE_mm/{name}')} for name in names},
        'per_image': [{'patient_id': pid, 'MRE': px, 'MRE_mm': mm}
                      for pid, px, mm in zip(split.patient_ids, image_mre_px, image_mre_mm)],
        'skeletal_class': {
            'class_thresholds_deg': list(thresholds),
            'predicted_vs_true_landmarks': class_agreement(truth_class, pred_class),
            'predicted_vs_recorded': (class_agreement(recorded, pred_class)
                                      if has_recorded else None),
            # How far the recorded labels follow ANB at all: the ceiling for the prediction.
            'true_landmarks_vs_recorded': (class_agreement(recorded, truth_class)
                                           if has_recorded else None),
        },
        'measurements': measurement_errors(truth_m, pred_m),
        'baseline_mean_shape': baseline,
    }


def worst_cases(metrics: dict, split, count: int) -> tuple[list[int], list[dict]]:
    """The `count` images with the highest per-image MRE in the report's unit.

    Returns (their indices, [{'patient_id', 'MRE', 'unit'}] for metrics['worst_cases']); `metrics`
    is not changed. In mm, images without a spacing are not ranked.
    """
    key = 'MRE_mm' if metrics['unit'] == 'mm' else 'MRE'
    ranked = np.array([image[key] for image in metrics['per_image']], float)
    order = np.argsort(-np.where(np.isfinite(ranked), ranked, -np.inf), kind='stable')
    chosen = [int(i) for i in order[:count] if np.isfinite(ranked[i])]
    cases = [{'patient_id': split.patient_ids[i], 'MRE': float(ranked[i]),
              'unit': metrics['unit']} for i in chosen]
    return chosen, cases


def framing_robustness(predictor, split, seed: int = 0) -> dict:
    """MRE (px) of each `robustness.VARIANTS` photograph with automatic framing and with the
    whole image as the face box, and the seconds per photograph each took."""
    import time

    from cephalometric.evaluation.robustness import VARIANTS, robustness_errors
    seconds = {'auto': 0.0, 'full': 0.0}

    def timed(mode):
        def predict(photo):
            start = time.perf_counter()
            keypoints = predictor.predict([photo], mode)[0].keypoints
            seconds[mode] += time.perf_counter() - start
            return keypoints
        return predict

    images = [read_rgb(path) for path in split.image_paths]
    errors = robustness_errors(images, split.keypoints, {m: timed(m) for m in seconds}, seed)
    calls = len(images) * len(VARIANTS)
    return {'unit': 'px', 'num_images': len(images), 'seed': seed,
            'MRE': {name: {mode: float(np.nanmean(errors[mode][name])) for mode in errors}
                    for name, _, _ in VARIANTS},
            'seconds_per_image': {mode: value / calls for mode, value in seconds.items()}}
