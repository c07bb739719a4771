"""Clinical cephalometric measurements from landmark coordinates (image pixels, y pointing down).

Landmarks are looked up by name through `cephalometric.landmarks.find_landmark`, so any landmark set
that contains the needed points yields the measurement and one that lacks them omits it (a landmark
whose coordinates are NaN/inf counts as missing).

Conventions
-----------
* Unsigned angles (0..180 deg) are mirror-invariant by construction.
* Signed quantities (E-line distances, incisor-to-line distances, proclination signs, Downs'
  convexity) need to know where "anterior" is. It is taken from the direction sella -> nasion
  (falling back to PNS -> ANS, then porion -> orbitale), never from the image's x axis, so a
  mirrored image (face looking left) gives the same signs.
* Angles between two *lines* are computed between directed vectors chosen so the clinical angle
  comes out (e.g. S->N against Go->Me gives ~32 deg, not its supplement ~148 deg). Each formula
  says which.
* Norms are the usual textbook values for adults of European ancestry (Steiner, Downs, Tweed,
  Ricketts, Jarabak, Bjork); populations differ, so they are a guide, not a diagnosis. They are
  written once, in MEASUREMENTS.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from cephalometric.landmarks import find_landmark

# ANB (degrees) -> skeletal class. Class I: 0 <= ANB <= 4; Class II: ANB > 4; Class III: ANB < 0.
DEFAULT_CLASS_THRESHOLDS = (0.0, 4.0)

CLASS_NAMES = {1: 'Class I', 2: 'Class II', 3: 'Class III'}

# Landmark key pairs of the main angle lines (S-N, N-A, N-B), for drawing.
ANGLE_LINES: tuple[tuple[str, str], ...] = (
    ('sella', 'nasion'), ('nasion', 'a point'), ('nasion', 'b point'))


class MeasurementInfo(NamedTuple):
    unit: str          # 'deg', 'px', 'mm', '%' or 'class'
    norm: str          # reference norm, human readable
    description: str   # what it is and how it is computed


_PX_NOTE = 'depends on image scale; see the _mm value'

# Every key compute_measurements can return, in report order.
MEASUREMENTS: dict[str, MeasurementInfo] = {
    # --- skeletal, sagittal (Steiner) ---
    'SNA': MeasurementInfo('deg', '82 +/- 2',
                           'Angle S-N-A at nasion: maxilla position relative to the cranial base'),
    'SNB': MeasurementInfo('deg', '80 +/- 2',
                           'Angle S-N-B at nasion: mandible position relative to the cranial base'),
    'ANB': MeasurementInfo('deg', '2 +/- 2',
                           'SNA - SNB (signed): maxillo-mandibular sagittal relation'),
    'skeletal_class': MeasurementInfo(
        'class', 'Class I (0 <= ANB <= 4)',
        'Skeletal class from ANB: I within the thresholds, II above (mandible behind), III below'),
    'convexity': MeasurementInfo(
        'deg', '0 +/- 5',
        'Downs angle of convexity: 180 - angle N-A-Pog, positive when A lies ahead of line N-Pog'),
    'facial_angle': MeasurementInfo(
        'deg', '87.8 +/- 3.6', 'Downs facial angle: Frankfort plane (Po-Or) to facial plane N-Pog; '
        'larger = more prognathic chin'),
    # --- skeletal, vertical ---
    'SN_GoMe': MeasurementInfo('deg', '32 +/- 5', 'Mandibular plane (Go-Me) to S-N line (Steiner)'),
    'SN_PP': MeasurementInfo('deg', '8 +/- 3', 'Palatal plane (ANS-PNS) to S-N line'),
    'PP_GoMe': MeasurementInfo(
        'deg', '27 +/- 4', 'Maxillary-mandibular planes angle (MMPA): palatal plane ANS-PNS to '
        'Go-Me'),
    'FMA': MeasurementInfo('deg', '25 +/- 5',
                           'Tweed FMA: Frankfort plane (Po-Or) to mandibular plane Go-Me'),
    'Y_axis': MeasurementInfo('deg', '59.4 +/- 3.8',
                              'Downs Y-axis: S-Gn line to Frankfort plane (Po-Or)'),
    'saddle_angle': MeasurementInfo('deg', '123 +/- 5', 'Bjork saddle angle N-S-Ar at sella'),
    'articular_angle': MeasurementInfo('deg', '143 +/- 6',
                                       'Bjork articular angle S-Ar-Go at articulare'),
    'gonial_angle': MeasurementInfo('deg', '130 +/- 7', 'Gonial angle Ar-Go-Me at gonion'),
    'bjork_sum': MeasurementInfo('deg', '396 +/- 6',
                                 'Bjork polygon sum: saddle + articular + gonial angle'),
    'LAFH_ratio': MeasurementInfo(
        '%', '55 +/- 2', 'Lower anterior face height ANS-Me as a percentage of total N-Me'),
    'jarabak_ratio': MeasurementInfo(
        '%', '62-65', 'Jarabak ratio: posterior face height S-Go / anterior face height N-Me '
        'x 100'),
    # --- dental ---
    'U1_NA': MeasurementInfo(
        'deg', '22', 'Upper incisor axis (apex -> tip) to line N-A; positive = crown tipped '
        'anterior'),
    'U1_NA_px': MeasurementInfo('px', _PX_NOTE, 'Upper incisor tip to line N-A, positive in front'),
    'U1_NA_mm': MeasurementInfo('mm', '4',
                                'Upper incisor tip to line N-A, positive in front (Steiner)'),
    'L1_NB': MeasurementInfo(
        'deg', '25', 'Lower incisor axis (apex -> tip) to line N-B; positive = crown tipped '
        'anterior'),
    'L1_NB_px': MeasurementInfo('px', _PX_NOTE, 'Lower incisor tip to line N-B, positive in front'),
    'L1_NB_mm': MeasurementInfo('mm', '4',
                                'Lower incisor tip to line N-B, positive in front (Steiner)'),
    'U1_SN': MeasurementInfo('deg', '103 +/- 6',
                             'Upper incisor axis to S-N line (posterior-inferior angle)'),
    'IMPA': MeasurementInfo('deg', '90 +/- 5',
                            'Tweed IMPA: lower incisor axis to mandibular plane Go-Me'),
    'interincisal': MeasurementInfo('deg', '131 +/- 6',
                                    'Interincisal angle between the incisor axes'),
    # --- soft tissue ---
    'nasolabial': MeasurementInfo(
        'deg', '90-110', 'Nasolabial angle at subnasale between nose tip and upper lip'),
    'soft_tissue_convexity': MeasurementInfo(
        'deg', 'about 160-170',
        "Soft-tissue facial convexity N'-Sn-Pog' at subnasale (photographic norms vary; "
        'smaller = more convex profile)'),
    'upper_lip_E_line_px': MeasurementInfo('px', _PX_NOTE,
                                           'Upper lip to Ricketts E-line, negative behind'),
    'upper_lip_E_line_mm': MeasurementInfo(
        'mm', '-4 (+/- 2)', "Upper lip to Ricketts E-line (nose tip - soft-tissue pogonion), "
        'negative behind'),
    'lower_lip_E_line_px': MeasurementInfo('px', _PX_NOTE,
                                           'Lower lip to Ricketts E-line, negative behind'),
    'lower_lip_E_line_mm': MeasurementInfo(
        'mm', '-2 (+/- 2)', "Lower lip to Ricketts E-line (nose tip - soft-tissue pogonion), "
        'negative behind'),
}


def angle_deg(vertex, a, b) -> float:
    """Unsigned angle a-vertex-b in degrees (0..180); NaN for a zero-length side (dropped).

    Plain floats, not numpy: measurement intervals evaluate every angle 2K + 1 times per tracing
    (`uncertainty`), the review page on every move."""
    vx, vy = float(vertex[0]), float(vertex[1])
    x1, y1, x2, y2 = float(a[0]) - vx, float(a[1]) - vy, float(b[0]) - vx, float(b[1]) - vy
    lengths = math.hypot(x1, y1) * math.hypot(x2, y2)
    cos = (x1 * x2 + y1 * y2) / lengths if lengths > 0 else math.nan
    if not math.isfinite(cos):
        return math.nan
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def vector_angle_deg(u, v) -> float:
    """Unsigned angle between the directed vectors u and v in degrees (0..180)."""
    return angle_deg((0.0, 0.0), u, v)


def _point(names: Sequence[str], coords, key: str):
    index = find_landmark(names, key)
    if index is None or index >= len(coords):
        return None
    point = np.asarray(coords[index], float).reshape(-1)[:2]
    return None if point.shape != (2,) or not np.all(np.isfinite(point)) else point


def sna_snb_anb(names: Sequence[str], coords) -> dict:
    """SNA, SNB and the signed ANB = SNA - SNB, in degrees; {} if S, N, A or B is missing.

    SNA: angle at nasion between sella and A point (norm 82 +/- 2 deg).
    SNB: angle at nasion between sella and B point (norm 80 +/- 2 deg).
    ANB = SNA - SNB (norm 2 +/- 2 deg): positive when A lies ahead of B.
    """
    s, n, a, b = (_point(names, coords, k) for k in ('sella', 'nasion', 'a point', 'b point'))
    if any(p is None for p in (s, n, a, b)):
        return {}
    sna = angle_deg(n, s, a)
    snb = angle_deg(n, s, b)
    return {'SNA': sna, 'SNB': snb, 'ANB': sna - snb}


def skeletal_class(anb: float, thresholds=DEFAULT_CLASS_THRESHOLDS) -> int:
    """Skeletal class from ANB: 1 (lower <= ANB <= upper), 2 (ANB > upper), 3 (ANB < lower)."""
    lower, upper = thresholds
    if anb > upper:
        return 2
    if anb < lower:
        return 3
    return 1


# Pairs (from, to) whose direction defines "anterior", tried in order.
_ANTERIOR_REFERENCES = (('sella', 'nasion'), ('pns', 'ans'), ('porion', 'orbitale'))


def anterior_direction(names: Sequence[str], coords) -> Optional[np.ndarray]:
    """Unit vector pointing to the front of the face: S->N, else PNS->ANS, else Po->Or; or None."""
    for start, end in _ANTERIOR_REFERENCES:
        p, q = _point(names, coords, start), _point(names, coords, end)
        if p is not None and q is not None:
            d = q - p
            length = np.linalg.norm(d)
            if length > 0:
                return d / length
    return None


def signed_distance_to_line(point, line_start, line_end, anterior) -> float:
    """Perpendicular distance of `point` from the line through line_start and line_end.

    Positive when the point lies on the anterior side of the line (the side `anterior` points to),
    negative behind it. Returns NaN when the line is degenerate or parallel to `anterior`.
    """
    p, a, b = (np.asarray(x, float) for x in (point, line_start, line_end))
    d = b - a
    length = np.linalg.norm(d)
    if length == 0:
        return math.nan
    d = d / length
    normal = np.array([-d[1], d[0]])  # unit normal; pick the one pointing anterior
    side = float(np.dot(normal, anterior))
    if side == 0:
        return math.nan
    if side < 0:
        normal = -normal
    return float(np.dot(p - a, normal))


def _signed_tilt(reference, axis, anterior) -> float:
    """Unsigned angle between `reference` and `axis`, positive when `axis` turns toward anterior.

    The sign is that of the component of `axis` along the part of `anterior` perpendicular to
    `reference`, so it is mirror-invariant.
    """
    reference = np.asarray(reference, float)
    axis = np.asarray(axis, float)
    angle = vector_angle_deg(reference, axis)
    r = reference / np.linalg.norm(reference)
    perp = anterior - np.dot(anterior, r) * r
    return angle if float(np.dot(axis, perp)) >= 0 else -angle


def compute_measurements(names: Sequence[str], coords, mm_per_pixel: Optional[float] = None,
                         class_thresholds=DEFAULT_CLASS_THRESHOLDS) -> dict:
    """Every measurement of `MEASUREMENTS` whose landmarks exist, as {key: float} (class: int).

    `names` are the landmark names (any spelling `find_landmark` accepts), `coords` an (N, 2) array
    of pixel coordinates in the same order (NaN = missing). `mm_per_pixel`, when given, adds the mm
    version of each pixel distance (`*_mm` keys). Keys come in the order of `MEASUREMENTS`.
    """
    if mm_per_pixel is not None and not (np.isfinite(mm_per_pixel) and mm_per_pixel > 0):
        raise ValueError(f'mm_per_pixel must be a positive number, got {mm_per_pixel!r}')
    lower, upper = class_thresholds
    if lower > upper:
        raise ValueError('class_thresholds must be (lower, upper) with lower <= upper, '
                         f'got {class_thresholds!r}')
    coords = np.asarray(coords, float)
    names = tuple(str(n) for n in names)   # one hashable name set for `find_landmark`'s cache
    cache: dict[str, Optional[np.ndarray]] = {}

    def pt(key: str):
        if key not in cache:
            cache[key] = _point(names, coords, key)
        return cache[key]

    anterior = anterior_direction(names, coords)
    out: dict = {}

    def put(key: str, needed: Sequence[str], formula: Callable[..., float], signed: bool = False):
        points = [pt(k) for k in needed]
        if any(p is None for p in points) or (signed and anterior is None):
            return
        with np.errstate(all='ignore'):
            value = float(formula(*points))
        if np.isfinite(value):
            out[key] = value

    # Norms live in MEASUREMENTS only; the comments below say how each value is measured.
    # SNA = angle S-N-A at N; SNB = angle S-N-B at N; ANB = SNA - SNB.
    out.update(sna_snb_anb(names, coords))
    if 'ANB' in out:
        out['skeletal_class'] = skeletal_class(out['ANB'], class_thresholds)
    # Downs angle of convexity = 180 - angle(N, A, Pog), + when A is ahead of N-Pog.
    def convexity(n, a, pog):
        side = signed_distance_to_line(a, n, pog, anterior)
        return (180.0 - angle_deg(a, n, pog)) * (-1.0 if side < 0 else 1.0)

    put('convexity', ('nasion', 'a point', 'pogonion'), convexity, signed=True)
    # Downs facial angle = angle between Or->Po (posterior) and N->Pog (down).
    put('facial_angle', ('porion', 'orbitale', 'nasion', 'pogonion'),
        lambda po, orb, n, pog: vector_angle_deg(po - orb, pog - n))

    # Plane angles between directed lines, each pointing anterior: S->N, PNS->ANS, Po->Or, Go->Me.
    put('SN_GoMe', ('sella', 'nasion', 'gonion', 'menton'),           # Steiner 32 +/- 5
        lambda s, n, go, me: vector_angle_deg(n - s, me - go))
    put('SN_PP', ('sella', 'nasion', 'pns', 'ans'),                   # 8 +/- 3
        lambda s, n, pns, ans: vector_angle_deg(n - s, ans - pns))
    put('PP_GoMe', ('pns', 'ans', 'gonion', 'menton'),                # MMPA 27 +/- 4
        lambda pns, ans, go, me: vector_angle_deg(ans - pns, me - go))
    put('FMA', ('porion', 'orbitale', 'gonion', 'menton'),            # Tweed 25 +/- 5
        lambda po, orb, go, me: vector_angle_deg(orb - po, me - go))
    # Y-axis (Downs): angle between Po->Or and S->Gn.
    put('Y_axis', ('porion', 'orbitale', 'sella', 'gnathion'),
        lambda po, orb, s, gn: vector_angle_deg(orb - po, gn - s))
    # Bjork polygon: saddle N-S-Ar, articular S-Ar-Go, gonial Ar-Go-Me, and their sum.
    put('saddle_angle', ('nasion', 'sella', 'articulare'), lambda n, s, ar: angle_deg(s, n, ar))
    put('articular_angle', ('sella', 'articulare', 'gonion'),
        lambda s, ar, go: angle_deg(ar, s, go))
    put('gonial_angle', ('articulare', 'gonion', 'menton'),
        lambda ar, go, me: angle_deg(go, ar, me))
    if all(k in out for k in ('saddle_angle', 'articular_angle', 'gonial_angle')):
        out['bjork_sum'] = out['saddle_angle'] + out['articular_angle'] + out['gonial_angle']
    # Face height ratios: 100 * |ANS-Me| / |N-Me|, Jarabak 100 * |S-Go| / |N-Me|.
    put('LAFH_ratio', ('ans', 'menton', 'nasion'),
        lambda ans, me, n: 100.0 * np.linalg.norm(me - ans) / np.linalg.norm(me - n))
    put('jarabak_ratio', ('sella', 'gonion', 'nasion', 'menton'),
        lambda s, go, n, me: 100.0 * np.linalg.norm(go - s) / np.linalg.norm(me - n))

    # U1-NA: angle between N->A and the upper incisor axis apex->tip (both point down), signed +
    # when the crown is tipped anterior of NA; U1-NA distance: tip ahead of NA.
    put('U1_NA', ('nasion', 'a point', 'upper 1 apex', 'upper 1 tip'),
        lambda n, a, apex, tip: _signed_tilt(a - n, tip - apex, anterior), signed=True)
    put('U1_NA_px', ('upper 1 tip', 'nasion', 'a point'),
        lambda tip, n, a: signed_distance_to_line(tip, n, a, anterior), signed=True)
    # L1-NB: angle between B->N and the lower incisor axis apex->tip (both point up), signed +
    # when the crown is tipped anterior of NB; L1-NB distance likewise.
    put('L1_NB', ('nasion', 'b point', 'lower 1 apex', 'lower 1 tip'),
        lambda n, b, apex, tip: _signed_tilt(n - b, tip - apex, anterior), signed=True)
    put('L1_NB_px', ('lower 1 tip', 'nasion', 'b point'),
        lambda tip, n, b: signed_distance_to_line(tip, n, b, anterior), signed=True)
    # U1-SN: angle between S->N and the upper incisor tip->apex (90 = perpendicular,
    # larger = proclined).
    put('U1_SN', ('sella', 'nasion', 'upper 1 tip', 'upper 1 apex'),
        lambda s, n, tip, apex: vector_angle_deg(n - s, apex - tip))
    # IMPA (Tweed): angle between Me->Go and the lower incisor apex->tip (larger = proclined).
    put('IMPA', ('gonion', 'menton', 'lower 1 apex', 'lower 1 tip'),
        lambda go, me, apex, tip: vector_angle_deg(go - me, tip - apex))
    # Interincisal: angle between the two tip->apex vectors (smaller = more proclined).
    put('interincisal', ('upper 1 tip', 'upper 1 apex', 'lower 1 tip', 'lower 1 apex'),
        lambda ut, ua, lt, la: vector_angle_deg(ua - ut, la - lt))

    # Nasolabial angle: angle Prn-Sn-Ls at subnasale.
    put('nasolabial', ('tip of the nose', 'subnasal', 'upper lip'),
        lambda prn, sn, ls: angle_deg(sn, prn, ls))
    # Soft-tissue convexity: angle N'-Sn-Pog' at subnasale.
    put('soft_tissue_convexity', ('st nasion', 'subnasal', 'st pogonion'),
        lambda stn, sn, pog: angle_deg(sn, stn, pog))
    # Ricketts E-line: nose tip (Prn) -> soft-tissue pogonion; lip distance signed, negative behind
    # the line.
    put('upper_lip_E_line_px', ('upper lip', 'tip of the nose', 'st pogonion'),
        lambda lip, prn, pog: signed_distance_to_line(lip, prn, pog, anterior), signed=True)
    put('lower_lip_E_line_px', ('lower lip', 'tip of the nose', 'st pogonion'),
        lambda lip, prn, pog: signed_distance_to_line(lip, prn, pog, anterior), signed=True)

    if mm_per_pixel is not None:
        for key in [k for k in out if k.endswith('_px')]:
            out[key[:-3] + '_mm'] = out[key] * float(mm_per_pixel)
    order = {k: i for i, k in enumerate(MEASUREMENTS)}
    return dict(sorted(out.items(), key=lambda item: order[item[0]]))


def format_value(key: str, value) -> str:
    """'SNA' 82.04 -> '82.0 deg'; 'skeletal_class' 2 -> 'Class II'; unknown keys just the number."""
    info = MEASUREMENTS.get(key)
    if key == 'skeletal_class':
        return CLASS_NAMES.get(int(value), str(value))
    if info is None:
        return f'{value:.1f}'
    unit = {'deg': ' deg', '%': ' %', 'px': ' px', 'mm': ' mm'}.get(info.unit, '')
    return f'{value:.1f}{unit}'
