"""How sure a tracing is: landmark error radii turned into intervals on the measurements and a
probability for each skeletal class.

Each landmark's error is modelled as an isotropic 2-D Gaussian whose 90% radius is the landmark's
calibrated `radius90` (P(r <= R) = 1 - exp(-R^2 / 2 sigma^2), so sigma = R / sqrt(2 ln 10)). A
measurement is a smooth function of the landmarks, so its spread follows from the derivatives
(first-order propagation, the delta method): derivatives by forward differences of
`compute_measurements`, one call per coordinate (it runs for every image inference measures).
Landmarks shared by several measurements make those measurements' errors correlated, and the
derivatives carry that. What first-order propagation of isotropic errors cannot know (errors
that run along a contour, landmarks that err together, heavy tails) the error calibration's
`interval_scale` corrects: per measurement, the factor that made its 90% interval hold 90% of
the validation split's true values (`evaluation.calibration.fit_interval_scale`). The skeletal
class is a cut of ANB, so its probabilities are those of ANB's normal distribution (with that
scale) falling in each band.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from cephalometric.measurements import compute_measurements

LEVEL = 0.9                 # intervals and radii are 90% ones
BORDERLINE_BELOW = 0.7      # no class reaches this probability: the class is reported borderline
_Z90 = 1.6448536269514722   # two-sided 90% of a normal: mean +- this many SDs
_RADIUS_TO_SIGMA = 1.0 / math.sqrt(2.0 * math.log(10.0))   # 90% radius of a 2-D Gaussian -> sigma
STEP_PX = 0.05              # finite-difference step, image pixels


def sigma_of_radius90(radius90) -> np.ndarray:
    """Per-axis standard deviation of an isotropic 2-D Gaussian with this 90% radius."""
    return np.asarray(radius90, np.float64) * _RADIUS_TO_SIGMA


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def measurement_spread(names: Sequence[str], keypoints, radius90,
                       mm_per_pixel: Optional[float] = None) -> tuple[dict, dict]:
    """(measurements, their standard deviations) for landmarks with 90% error radii `radius90`.

    Landmarks without a radius (NaN) or with radius 0 count as exact; measurements that cannot be
    computed, or whose derivative cannot, get no standard deviation.
    """
    points = np.asarray(keypoints, np.float64).reshape(-1, 2)
    sigma = sigma_of_radius90(radius90).reshape(-1)
    values = compute_measurements(names, points, mm_per_pixel=mm_per_pixel)
    numeric = {k: v for k, v in values.items()
               if k != 'skeletal_class' and isinstance(v, (int, float)) and math.isfinite(v)}
    variance = dict.fromkeys(numeric, 0.0)
    for index in range(len(points)):
        if not (np.isfinite(points[index]).all() and np.isfinite(sigma[index])
                and sigma[index] > 0):   # an exact point adds nothing (and costs two calls)
            continue
        for axis in (0, 1):
            shifted = points.copy()
            shifted[index, axis] += STEP_PX
            moved = compute_measurements(names, shifted, mm_per_pixel=mm_per_pixel)
            for key in numeric:
                ahead = moved.get(key)
                if ahead is None or variance[key] is None:
                    variance[key] = None
                    continue
                slope = (ahead - numeric[key]) / STEP_PX
                variance[key] = (variance[key] + (slope * sigma[index]) ** 2
                                 if math.isfinite(slope) else None)
    spread = {k: math.sqrt(v) for k, v in variance.items() if v is not None}
    return values, spread


def scale_key(key: str) -> str:
    """The `interval_scale` key of a measurement: a distance in mm shares its pixel twin's (the
    ratio of error to stated spread has no unit)."""
    return key[:-3] + '_px' if key.endswith('_mm') else key


def scaled_spread(spread: Mapping, interval_scale: Optional[Mapping] = None) -> dict:
    """Standard deviations times the calibration's factor per measurement (1 where it has none)."""
    scale = interval_scale or {}
    return {key: s * float(scale.get(scale_key(key), 1.0)) for key, s in spread.items()}


def intervals(values: Mapping, spread: Mapping) -> dict:
    """90% interval [low, high] of every measurement that has a spread."""
    return {key: [values[key] - _Z90 * s, values[key] + _Z90 * s] for key, s in spread.items()}


def class_probabilities(anb: float, anb_sd: float, thresholds=(0.0, 4.0)) -> dict:
    """{1, 2, 3: probability} of the skeletal class (I: low <= ANB <= high, II above, III below)
    when ANB is normal with mean `anb` and standard deviation `anb_sd`."""
    low, high = thresholds
    if not anb_sd > 0:
        below, above = float(anb < low), float(anb > high)
    else:
        below = _normal_cdf((low - anb) / anb_sd)
        above = 1.0 - _normal_cdf((high - anb) / anb_sd)
    return {1: max(0.0, 1.0 - below - above), 2: above, 3: below}


def tracing_certainty(names: Sequence[str], keypoints, radius90,
                      mm_per_pixel: Optional[float] = None, thresholds=(0.0, 4.0),
                      interval_scale: Optional[Mapping] = None) -> dict:
    """Measurement intervals and class probabilities of one tracing, as recorded in the JSON:
    {'level': 0.9, 'intervals': {key: [low, high]}, 'class_probabilities': {'1': p, ...},
    'class_borderline': bool} (no class entries when ANB cannot be computed).
    `interval_scale`: the error calibration's factor per measurement (`scaled_spread`)."""
    values, spread = measurement_spread(names, keypoints, radius90, mm_per_pixel)
    spread = scaled_spread(spread, interval_scale)
    result = {'level': LEVEL, 'intervals': intervals(values, spread)}
    if 'ANB' in values and 'ANB' in spread:
        probabilities = class_probabilities(values['ANB'], spread['ANB'], thresholds)
        result['class_probabilities'] = {str(k): p for k, p in probabilities.items()}
        result['class_borderline'] = max(probabilities.values()) < BORDERLINE_BELOW
    return result
