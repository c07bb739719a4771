"""The inference results layout (one record per image) and its JSON/CSV writers.

A record is a plain dict, the same in `--json` output and for the review app:

    {"image": "photos/x.jpg",            # the input path as given
     "picture": "out/x_landmarks.jpg",   # annotated picture, or null when none was drawn
     "size": [width, height],            # of the input image, pixels
     "bbox": [x, y, w, h],               # face region the model saw, pixels
     "framing": {"method": "auto", "bbox": [...], "mirrored": false, "iterations": 2,
                 "mean_score": 0.71, "review_reason": null, "candidates": [0.71, 0.32],
                 "disagreement": 0.012,           # framing vs landmark model, share of box
                 "rotation": 0.0},                # degrees turned for a tilted head
     "landmarks": [{"name": "S", "x": 101.5, "y": 88.25, "score": 0.91, "review": false,
                    "expected_error_px": 1.8, "radius90_px": 3.4}, ...],   # (+ _mm with spacing)
     "measurements": {"SNA": 82.1, ..., "skeletal_class": 1},
     "certainty": {"level": 0.9, "intervals": {"ANB": [1.9, 4.4], ...},
                   "class_probabilities": {"1": 0.71, "2": 0.29, "3": 0.0},
                   "class_borderline": false},
     "errors_calibrated": true,
     "skeletal_class_note": null}        # why no class was given, when it was withheld

`review` is true for a landmark scoring below the score threshold or whose 90% radius exceeds the
review radius (`review_radius`: 2 mm where the spacing is known, else 2% of the face box width).
`expected_error_px` / `radius90_px` (the landmark's calibrated expected error and the radius that
holds its true position 9 times in 10) and `certainty` (90% intervals of the measurements and a
probability per skeletal class, `uncertainty.tracing_certainty`) need a checkpoint whose training
stored an error calibration; without one `errors_calibrated` is false and they are absent.
`skeletal_class` is left out of `measurements` (and `skeletal_class_note` says why) when S, N, A
or B is unsure or the image is too small to hold a face, or when framing found no face, too
small a one, or one that fails the checkpoint's face check (`framing.review_reason`: 'auto' finds
the box, 'full' is the whole image, 'bbox' was given; `mirrored` true means the face looked the
other way than in training and the landmarks were mapped back; a `rotation` other than 0 means
the photograph was turned that many degrees counterclockwise to frame a tilted head, and the face
box is `bbox` turned as much about its centre).
JSON is strict: NaN and infinity become null, never bare `NaN`.
`--json` holds one record for a single image and a list of records otherwise; `load_records`
reads either back as a list. `StagedFiles` writes several outputs together or not at all.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cephalometric.atomic import (
    publish,
    remove_stale_temporaries,
    signals_deferred,
    temporary_beside,
    write_text_atomically,
)
from cephalometric.data.decoding import MAX_IMAGE_SIDE
from cephalometric.errors import UserError, first_line
from cephalometric.json_data import read_json_file
from cephalometric.landmarks import find_landmark
from cephalometric.outputs import nearest_existing

# Landmarks the skeletal class (from ANB = SNA - SNB) depends on.
CLASS_LANDMARKS = ('S', 'N', 'A', 'B')
# Shorter image side, pixels, below which no face can be resolved well enough to classify.
MIN_CLASS_IMAGE_SIDE = 32
MAX_RECORDS_BYTES = 256 << 20    # a --json of many thousand images is a few tens of MB


def json_ready(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars/arrays -> Python, so json.dumps(allow_nan=False) works."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _rounded(value, digits: int):
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def class_withheld_reason(names: Sequence[str], scores, size, score_threshold: float,
                          framing_reason: Optional[str] = None) -> Optional[str]:
    """Why no skeletal class may be reported for this prediction, or None when it may.
    `framing_reason`: why framing found no usable face (`framing.review_reason`), if it did not."""
    width, height = size
    if min(width, height) < MIN_CLASS_IMAGE_SIDE:
        return f'image {width}x{height} px is too small (under {MIN_CLASS_IMAGE_SIDE} px a side)'
    unsure = []
    for key in CLASS_LANDMARKS:
        index = find_landmark(names, key)
        if index is None:
            continue
        score = float(scores[index])
        if not (score >= score_threshold):
            unsure.append(key)
    reasons = [f'{", ".join(unsure)} below score {score_threshold:g}, check them'] if unsure else []
    reasons += [framing_reason] if framing_reason else []
    return '; '.join(reasons) or None


REVIEW_RADIUS_MM = 2.0         # a landmark whose 90% radius is wider than this is reviewed
REVIEW_RADIUS_OF_BOX = 0.02    # without a spacing: 2% of the face box width


def review_radius(bbox, mm_per_pixel: Optional[float]) -> Optional[float]:
    """The 90% radius, in image pixels, above which a landmark is marked for review."""
    if mm_per_pixel:
        return REVIEW_RADIUS_MM / mm_per_pixel
    if len(bbox) == 4 and bbox[2] > 0:
        return REVIEW_RADIUS_OF_BOX * float(bbox[2])
    return None


def image_record(image: str, prediction, measurements: Mapping[str, Any], *,
                 score_threshold: float, picture: Optional[str] = None,
                 size: Optional[Sequence[int]] = None,
                 class_note: Optional[str] = None,
                 mm_per_pixel: Optional[float] = None) -> dict:
    """The record of one image (see the module docstring); values rounded, strict-JSON ready.
    Every landmark is marked for review when framing found no usable face; a landmark the model
    gave no position (NaN: its heatmap held NaN or infinity) has x and y null, score 0 and is
    marked for review, and no skeletal class is given without S, N, A and B."""
    measurements = dict(measurements)
    framing = getattr(prediction, 'framing', None)
    unframed = bool(framing and framing.get('review_reason'))
    if class_note is None and 'skeletal_class' in measurements:
        unplaced = [key for key in CLASS_LANDMARKS
                    if (index := find_landmark(prediction.names, key)) is not None
                    and not np.isfinite(np.asarray(prediction.keypoints[index], float)).all()]
        if unplaced:
            class_note = f'no skeletal class: {", ".join(unplaced)} have no position'
    if class_note is not None:
        measurements.pop('skeletal_class', None)
    radius90 = getattr(prediction, 'radius90', None)
    expected = getattr(prediction, 'expected_error', None)
    limit = review_radius(prediction.bbox, mm_per_pixel)
    landmarks = []
    for index, (name, (x, y), s) in enumerate(zip(prediction.names, prediction.keypoints,
                                                   prediction.scores)):
        landmark = {'name': name, 'x': _rounded(x, 2), 'y': _rounded(y, 2),
                    'score': _rounded(s, 4) if math.isfinite(float(s)) else 0.0,
                    'review': (unframed or not (float(s) >= score_threshold)
                               or not (math.isfinite(float(x)) and math.isfinite(float(y))))}
        if radius90 is not None:
            wide = not (float(radius90[index]) <= limit) if limit is not None else False
            landmark['review'] = landmark['review'] or wide
            for key, values in (('expected_error', expected), ('radius90', radius90)):
                landmark[f'{key}_px'] = _rounded(values[index], 2)
                if mm_per_pixel:
                    landmark[f'{key}_mm'] = _rounded(values[index] * mm_per_pixel, 2)
        landmarks.append(landmark)
    record = {
        'image': str(image),
        'picture': None if picture is None else str(picture),
        'size': None if size is None else [int(v) for v in size],
        'bbox': [_rounded(v, 2) for v in prediction.bbox] if len(prediction.bbox) else None,
        'framing': framing,
        'landmarks': landmarks,
        'measurements': {k: (int(v) if k == 'skeletal_class' else _rounded(v, 3))
                         for k, v in measurements.items()},
        'errors_calibrated': radius90 is not None,
        'skeletal_class_note': class_note,
    }
    if radius90 is not None:
        from cephalometric.uncertainty import tracing_certainty
        certainty = tracing_certainty(prediction.names, prediction.keypoints, radius90,
                                      mm_per_pixel,
                                      interval_scale=getattr(prediction, 'interval_scale', None))
        certainty['intervals'] = {k: [_rounded(v, 3) for v in pair]
                                  for k, pair in certainty['intervals'].items()}
        if 'class_probabilities' in certainty:
            certainty['class_probabilities'] = {
                k: _rounded(v, 3) for k, v in certainty['class_probabilities'].items()}
            if class_note is not None:   # no class: no probabilities for one either
                certainty.pop('class_probabilities')
                certainty.pop('class_borderline')
        record['certainty'] = certainty
    return record


def json_text(data: Any) -> str:
    """Strict JSON (no NaN), indented, with a final newline."""
    return json.dumps(json_ready(data), indent=2, allow_nan=False) + '\n'


def csv_text(records: Sequence[dict]) -> str:
    """One row per record: image, picture, each landmark's x/y/score (and 90% radius, with an
    error calibration), then every measurement (and its 90% interval), the class probabilities."""
    measurement_keys = sorted({k for r in records for k in r['measurements']})
    names = [lm['name'] for lm in records[0]['landmarks']] if records else []
    calibrated = any(r.get('errors_calibrated') for r in records)
    fields = ('x', 'y', 'score') + (('radius90_px',) if calibrated else ())
    header = ['image', 'picture'] + [f'{n}_{field}' for n in names for field in fields]
    interval_keys = sorted({k for r in records for k in r.get('certainty', {}).get('intervals',
                                                                                  {})})
    header += measurement_keys + [f'{k}_{end}' for k in interval_keys for end in ('low', 'high')]
    header += [f'p_class_{c}' for c in ('1', '2', '3')] if calibrated else []
    header += ['skeletal_class_note']
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(header)

    def cell(value):
        return '' if value is None else value

    for record in records:
        row = [record['image'], cell(record.get('picture'))]
        for landmark in record['landmarks']:
            row += [cell(landmark.get(field)) for field in fields]
        row += [cell(record['measurements'].get(k)) for k in measurement_keys]
        certainty = record.get('certainty', {})
        for key in interval_keys:
            row += [cell(v) for v in certainty.get('intervals', {}).get(key, [None, None])]
        if calibrated:
            row += [cell(certainty.get('class_probabilities', {}).get(c)) for c in ('1', '2', '3')]
        row.append(cell(record.get('skeletal_class_note')))
        writer.writerow(row)
    return stream.getvalue()


def records_json(records: Sequence[dict]) -> str:
    """The --json text: one record for a single image, a list for several."""
    return json_text(records[0] if len(records) == 1 else list(records))


def write_json(path: str, data: Any) -> None:
    """Write `data` as strict JSON to `path`, atomically."""
    write_text_atomically(path, json_text(data))


def write_csv(path: str, records: Sequence[dict]) -> None:
    """Write the records' table to `path`, atomically."""
    write_text_atomically(path, csv_text(records))


def load_records(path: str) -> list[dict]:
    """Read an inference --json file back as a list of records (one-line UserError if it is not)."""
    if not os.path.isfile(path):    # missing, a folder, or a device read without end
        raise UserError(f'landmarks JSON {path} is not a regular file; pass a file written by '
                        'inference.py --json')
    try:
        data = read_json_file(os.fspath(path), max_bytes=MAX_RECORDS_BYTES)
    except (OSError, ValueError, RecursionError, MemoryError) as error:
        raise UserError(f'cannot read landmarks JSON {path} ({first_line(error, limit=120)}); '
                        'pass a file written by inference.py --json') from None
    records = [data] if isinstance(data, dict) else data
    if not isinstance(records, list) or not all(_record_problem(r) is None for r in records):
        problem = (next(p for p in map(_record_problem, records) if p)
                   if isinstance(records, list) else 'is not a list of records')
        raise UserError(f'{path} does not hold inference records (image, landmarks): {problem}; '
                        'pass a file written by inference.py --json')
    return records


def _record_problem(record: Any) -> Optional[str]:
    """What keeps `record` from being an inference record as written by inference.py, or None.
    Positions and scores are finite numbers or null; the size is two whole numbers."""
    def number_or_null(value) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                 and math.isfinite(value))

    if not isinstance(record, dict) or not isinstance(record.get('image'), str):
        return 'a record without an image name'
    where = f'record of {record["image"][:80]!r}'
    landmarks = record.get('landmarks')
    if not isinstance(landmarks, list) or not landmarks:
        return f'the {where} has no landmarks list'
    for landmark in landmarks:
        if not (isinstance(landmark, dict) and isinstance(landmark.get('name'), str)
                and all(number_or_null(landmark.get(key)) for key in ('x', 'y', 'score'))):
            return f'the {where} has a landmark without a name and numeric x, y, score'
    size = record.get('size')
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMAGE_SIDE
            for v in size)):
        return f'the {where} has a size that is not two whole numbers of pixels'
    measurements = record.get('measurements', {})
    if not isinstance(measurements, dict) or not all(
            number_or_null(v) for v in measurements.values()):
        return f'the {where} has measurements that are not numbers'
    return None


def check_output_file(path: str, option: str) -> None:
    """Refuse, before any work, an output file that is a folder, under a file or not writable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f'{option} {path} is a folder; give a file name')
    existing = nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(existing):
        raise UserError(f'{option} {path} lies under {existing}, which is a file; choose another '
                        f'{option}')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f'{option} {path}: cannot write to {existing}; choose another {option} '
                        'or check the folder\'s permissions')
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f'{option} {path} exists and is read-only; choose another {option}')


class StagedFiles:
    """Files written beside their targets and moved into place together, or not at all.

    `reserve(path)` creates an empty temporary next to `path` (making missing folders, which are
    removed again on failure) and returns its name; write into it. `commit` renames every temporary
    onto its target; `discard` deletes them. Used as a context manager: commit on success, discard
    on any error, OSError turned into one UserError line.
    """

    def __init__(self):
        self.pending: list[tuple[str, str]] = []
        self.created: list[str] = []

    def reserve(self, path: str) -> str:
        path = os.path.abspath(os.fspath(path))
        folder = os.path.dirname(path)
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(missing):
            os.mkdir(folder)
            self.created.append(folder)
        remove_stale_temporaries(folder)
        temporary = temporary_beside(path)
        self.pending.append((temporary, path))
        return temporary

    def commit(self) -> None:
        with signals_deferred():    # every file or none: no signal between the renames
            for temporary, path in self.pending:
                publish(temporary, path)
        self.pending, self.created = [], []

    def discard(self) -> None:
        for temporary, _ in self.pending:
            with contextlib.suppress(OSError):
                os.remove(temporary)
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        self.pending, self.created = [], []

    def __enter__(self) -> 'StagedFiles':
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is None:
            try:
                self.commit()
                return False
            except OSError as failure:
                self.discard()
                raise UserError(f'could not write the results ({failure.strerror or failure}); '
                                'check free disk space and permissions') from None
        self.discard()
        if isinstance(error, OSError):
            raise UserError(f'could not write the results ({error.strerror or error}); check free '
                            'disk space and permissions') from None
        return False
