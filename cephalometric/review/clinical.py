"""What the review page and the report tell a clinician: names, norms with marks, definitions.

Job: the clinical name of each measurement key (the code key stays in a tooltip), the norm of
`measurements.MEASUREMENTS` read as mean +/- SD (or a range), the mark of a value outside one or
two SD ("+"/"++" above, "-"/"--" below: a sign as well as a colour), and a one-line definition of
each landmark of the 19-point photograph set and the ISBI 2015 set (looked up through the
landmark aliases, so any spelling of the set works). Pure data and functions; imports only the
standard library and the package's `landmarks` and `measurements`.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence

from cephalometric.landmarks import canonical_key, estimated_landmarks
from cephalometric.measurements import CLASS_NAMES, MEASUREMENTS

CLINICAL_NAMES: dict[str, str] = {
    'SNA': 'SNA (maxilla to cranial base)',
    'SNB': 'SNB (mandible to cranial base)',
    'ANB': 'ANB (jaw relation)',
    'skeletal_class': 'Skeletal class',
    'convexity': 'Angle of convexity (Downs)',
    'facial_angle': 'Facial angle (Downs)',
    'SN_GoMe': 'Mandibular plane to SN',
    'SN_PP': 'Palatal plane to SN',
    'PP_GoMe': 'Maxillo-mandibular plane angle',
    'FMA': 'Frankfort-mandibular angle (FMA)',
    'Y_axis': 'Y-axis (Downs)',
    'saddle_angle': 'Saddle angle N-S-Ar',
    'articular_angle': 'Articular angle S-Ar-Go',
    'gonial_angle': 'Gonial angle Ar-Go-Me',
    'bjork_sum': 'Bjork sum',
    'LAFH_ratio': 'Lower face height ratio',
    'jarabak_ratio': 'Jarabak ratio',
    'U1_NA': 'Upper incisor to NA (angle)',
    'U1_NA_px': 'Upper incisor to NA (distance, px)',
    'U1_NA_mm': 'Upper incisor to NA (distance)',
    'L1_NB': 'Lower incisor to NB (angle)',
    'L1_NB_px': 'Lower incisor to NB (distance, px)',
    'L1_NB_mm': 'Lower incisor to NB (distance)',
    'U1_SN': 'Upper incisor to SN',
    'IMPA': 'Lower incisor to mandibular plane (IMPA)',
    'interincisal': 'Interincisal angle',
    'nasolabial': 'Nasolabial angle',
    'soft_tissue_convexity': 'Soft-tissue convexity',
    'upper_lip_E_line_px': 'Upper lip to E-line (px)',
    'upper_lip_E_line_mm': 'Upper lip to E-line',
    'lower_lip_E_line_px': 'Lower lip to E-line (px)',
    'lower_lip_E_line_mm': 'Lower lip to E-line',
}

# Canonical landmark key (landmarks.ALIASES) -> a short definition for the help panel and tooltips.
DEFINITIONS: dict[str, str] = {
    'sella': 'Centre of the sella turcica, the saddle-shaped pit of the sphenoid bone that holds '
             'the pituitary gland.',
    'nasion': 'Most anterior point of the frontonasal suture, where the nasal bones meet the '
              'forehead bone.',
    'a point': 'A point (subspinale): deepest point of the front curve of the upper jaw, between '
               'the nasal spine and the upper incisor.',
    'b point': 'B point (supramentale): deepest point of the front curve of the lower jaw, '
               'between the lower incisor and the chin.',
    'upper 1 tip': 'Incisal edge (tip) of the most prominent upper central incisor.',
    'upper 1 apex': 'Root tip (apex) of the upper central incisor.',
    'lower 1 tip': 'Incisal edge (tip) of the most prominent lower central incisor.',
    'lower 1 apex': 'Root tip (apex) of the lower central incisor.',
    'ans': 'Anterior nasal spine: tip of the bony spine at the front of the upper jaw, below '
           'the nose.',
    'pns': 'Posterior nasal spine: back end of the hard palate.',
    'gonion': 'Gonion: most posterior-inferior point of the angle of the lower jaw.',
    'menton': 'Menton: lowest point of the bony chin (mandibular symphysis).',
    'pogonion': 'Pogonion: most anterior point of the bony chin.',
    'gnathion': 'Gnathion: point of the bony chin between pogonion and menton, the most '
                'anterior-inferior.',
    'orbitale': 'Orbitale: lowest point of the lower rim of the eye socket.',
    'porion': 'Porion: top of the bony ear canal (external acoustic meatus).',
    'articulare': 'Articulare: where the back edge of the jaw ramus crosses the base of the '
                  'skull.',
    'st nasion': "Soft-tissue nasion (N'): deepest point of the skin between forehead and nose.",
    'tip of the nose': 'Pronasale: most anterior point of the nose.',
    'subnasal': 'Subnasale: where the base of the nose meets the upper lip.',
    'upper lip': 'Labrale superius: most anterior point of the upper lip.',
    'lower lip': 'Labrale inferius: most anterior point of the lower lip.',
    'st pogonion': "Soft-tissue pogonion (Pog'): most anterior point of the skin of the chin.",
}

# ISBI 2015 challenge landmark names (X-ray set), in its order; each resolves to a definition.
ISBI_LANDMARKS: tuple[str, ...] = (
    'sella', 'nasion', 'orbitale', 'porion', 'subspinale', 'supramentale', 'pogonion', 'menton',
    'gnathion', 'gonion', 'lower incisal incision', 'upper incisal incision', 'upper lip',
    'lower lip', 'subnasale', 'soft tissue pogonion', 'posterior nasal spine',
    'anterior nasal spine', 'articulare')

MARK_SIGNS = {2: '++', 1: '+', 0: '', -1: '-', -2: '--'}


def definition(name: str) -> str:
    """One-line definition of landmark `name` ('' when the name is not a known landmark)."""
    return DEFINITIONS.get(canonical_key(name) or '', '')


def landmark_help(names: Sequence[str], estimated: Optional[Sequence[bool]] = None) -> list[dict]:
    """Per landmark of a set: name, definition and whether it is an estimate (not on a photo;
    default: `landmarks.estimated_landmarks`)."""
    flags = estimated_landmarks(names) if estimated is None else estimated
    return [{'name': name, 'definition': definition(name), 'estimated': bool(flag)}
            for name, flag in zip(names, flags)]


_NUMBER = r'-?\d+(?:\.\d+)?'


def norm_mean_sd(key: str) -> Optional[tuple[float, float]]:
    """(mean, SD) of the norm of measurement `key`; a range 'a-b' counts as mean +/- half its width;
    None when the norm gives no spread (e.g. '22') or is not a number."""
    info = MEASUREMENTS.get(key)
    if info is None or info.unit in ('px', 'class'):
        return None
    text = info.norm
    found = re.fullmatch(rf'\s*({_NUMBER})\s*\(?\s*\+/-\s*({_NUMBER})\s*\)?\s*', text)
    if found:
        return float(found.group(1)), float(found.group(2))
    found = re.fullmatch(rf'\s*(?:about\s+)?({_NUMBER})\s*-\s*({_NUMBER})\s*', text)
    if found:
        low, high = float(found.group(1)), float(found.group(2))
        return (low + high) / 2, (high - low) / 2
    return None


def mark(key: str, value) -> int:
    """-2, -1, 0, 1 or 2: how far `value` lies outside the norm (beyond 1 or 2 SD, below or
    above); for the skeletal class, 1 for any class but Class I; 0 when no spread is known."""
    if key == 'skeletal_class':
        return 0 if value in (None, 1) else 1
    norm = norm_mean_sd(key)
    if norm is None or value is None or not math.isfinite(float(value)):
        return 0
    mean, sd = norm
    deviation = (float(value) - mean) / sd
    if abs(deviation) > 2:
        return 2 if deviation > 0 else -2
    if abs(deviation) > 1:
        return 1 if deviation > 0 else -1
    return 0


def table_rows(measurements: dict) -> list[dict]:
    """The clinical table: key, clinical name, value, unit, full norm, mark and its sign, in the
    order of MEASUREMENTS (values as given: rounded once, by the store)."""
    rows = []
    for key, info in MEASUREMENTS.items():
        if key not in measurements:
            continue
        value = measurements[key]
        level = mark(key, value)
        rows.append({'key': key, 'name': CLINICAL_NAMES.get(key, key), 'value': value,
                     'text': CLASS_NAMES.get(value, str(value)) if key == 'skeletal_class'
                     else f'{value:.2f}',
                     'unit': '' if info.unit == 'class' else info.unit, 'norm': info.norm,
                     'description': info.description, 'mark': level,
                     'sign': '!' if key == 'skeletal_class' and level else MARK_SIGNS[level]})
    return rows
