"""The review app's data: one image folder, the model's predictions, the reviewed records on disk.

Job: map image file names to files inside ONE folder (a name is a key of the listing made at start;
'..', absolute paths and symlinks that leave the folder are refused), keep the predictions (made in
a background thread when asked, so the page opens at once; each image is predicted once), check
everything a browser sends, and read and write the reviewed records `<out-dir>/<image stem>.json`:
the inference JSON layout of `results.image_record` plus

* per landmark `"corrected": true|false`, `"predicted": {"x", "y"}` (the model's position it
  replaced), `"estimated"` (a point a photograph cannot show) and `"visible": false` with
  `"x": null, "y": null` for a point the photograph does not show (left out of the measurements
  and of the training export);
* `"review": {"status": "reviewed" | "cannot trace", "reason", "reviewer" (initials), "date" (UTC,
  ISO 8601), "model": {"file", "sha256"}}`;
* `"calibration": {"points": [[x, y], [x, y]], "length_mm", "mm_per_pixel"}` or null: a known
  distance marked on this photograph, which gives its mm values (else `--mm-per-pixel`, if given).

One truth: coordinates are rounded to 0.01 px (ROUND_PX) and measurements to 0.01 (ROUND_VALUES)
here, once, before anything is computed, shown or saved, so the page and the file agree to the
digit and in the class. Measurements come from `measurements.compute_measurements`, nothing else.
JSON from outside (request bodies, records) is read by `parse_json`: bounded integers and depth,
no NaN/Infinity. No web code here. Imports numpy and the package's `cli`, `data.images`, `errors`,
`landmarks`, `measurements`, `prediction.predictor` (the Prediction record only),
`prediction.results` and `review.clinical`.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import os
import os.path as osp
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from cephalometric.cli import check_mm_per_pixel, check_score_threshold
from cephalometric.data.images import IMAGE_EXTENSIONS, read_rgb
from cephalometric.errors import UserError
from cephalometric.json_data import parse_json  # noqa: F401  (the server and report use it)
from cephalometric.landmarks import estimated_landmarks, find_landmark
from cephalometric.measurements import ANGLE_LINES, compute_measurements
from cephalometric.prediction.predictor import Prediction
from cephalometric.prediction.results import (
    class_withheld_reason,
    image_record,
    review_radius,
    write_json,
)
from cephalometric.review.clinical import landmark_help, mark
from cephalometric.uncertainty import tracing_certainty

# A corrected point differs from the prediction by more than this (pixels; records keep 0.01 px).
CORRECTED_TOLERANCE = 0.005
ROUND_PX = 2          # decimals of every coordinate the app keeps, shows and saves
ROUND_VALUES = 2      # decimals of every measurement it shows and saves
STATUSES = ('reviewed', 'cannot trace')
MAX_IMAGE_SIDE = 100_000
MAX_REASON = 300
INITIALS = re.compile(r'[A-Za-z]{1,4}')


class RequestError(Exception):
    """A bad request from the browser: HTTP `status` and a message saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Case:
    """One image under review."""
    name: str              # file name inside the images folder (the key the browser uses)
    stem: str              # file name without extension: the record's name in --out-dir
    size: tuple            # (width, height) pixels
    bbox: tuple            # face region the model saw
    predicted: np.ndarray  # (K, 2) the model's positions (0.01 px)
    scores: np.ndarray     # (K,) the model's scores
    current: np.ndarray    # (K, 2) saved positions (NaN: not visible), else the predicted ones
    reviewed: bool
    status: str = 'to review'               # 'to review', 'reviewed' or 'cannot trace'
    reason: Optional[str] = None            # why it cannot be traced
    calibration: Optional[dict] = None      # points, length_mm, mm_per_pixel
    review: dict = field(default_factory=dict)   # reviewer, date, model of the saved record
    flagged: list = field(default_factory=list)  # landmark indices the model gave no number for
    radius90: Optional[np.ndarray] = None   # (K,) calibrated 90% error radii, px; None: none
    interval_scale: Optional[dict] = None   # the calibration's factor per measurement interval
    framing_reason: Optional[str] = None    # why framing found no reliable face, if it did not


def inside(folder: str, path: str) -> bool:
    """True when `path`, with every symlink resolved, lies inside `folder` (resolved too)."""
    root = osp.realpath(folder)
    return osp.commonpath([root, osp.realpath(path)]) == root


def list_folder_images(folder: str) -> tuple[list[str], list[str]]:
    """(image file names in `folder`, sorted; notes about entries left out)."""
    names, notes = [], []
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if not name.lower().endswith(IMAGE_EXTENSIONS) or name.startswith('.'):
            continue
        if not inside(folder, path):
            notes.append(f'left out {name}: it links outside {folder}')
        elif osp.isfile(path):
            names.append(name)
    return names, notes


def _number(value) -> Optional[float]:
    """A finite float from a JSON number, else None (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def round_points(coords) -> np.ndarray:
    """The one rounding of coordinates (NaN, a point not visible, stays NaN)."""
    return np.round(np.asarray(coords, float), ROUND_PX)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def model_version(path: str) -> dict:
    """What each saved record names as its model: the checkpoint's file name and SHA-256."""
    return {'file': osp.basename(path), 'sha256': file_sha256(path)}


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace('+00:00', 'Z')


class ReviewStore:
    """The images of `images_dir`, predicted by `predictor`, reviewed into `out_dir`.

    `predictor.predict` is called with a list of RGB arrays and returns one prediction per image
    (names, keypoints, scores, bbox), as `LandmarkPredictor.predict` does (face region and facing
    direction found automatically). With `background=True` the predictions are made in a thread
    after the constructor returns (`progress()` says how far); saved reviews are never predicted.
    `model` is the model version each saved record names (see `model_version`). `estimated`
    names the landmarks a photograph cannot show (default: the set's skeletal points; [] for
    X-rays, where every point is seen).
    """

    def __init__(self, images_dir: str, out_dir: str, predictor,
                 score_threshold: float = 0.3, mm_per_pixel: Optional[float] = None,
                 batch_size: int = 8, log: Callable[[str], None] = print,
                 background: bool = False, model: Optional[dict] = None,
                 estimated: Optional[Sequence[str]] = None):
        self.check_options(images_dir, out_dir, score_threshold, mm_per_pixel)
        self.images_dir = osp.abspath(images_dir)
        self.out_dir = osp.abspath(out_dir)
        self.score_threshold = float(score_threshold)
        self.mm_per_pixel = mm_per_pixel
        self.model = dict(model) if model else None
        self.estimated_names = None if estimated is None else list(estimated)
        self.log = log
        self.lock = threading.RLock()
        names, notes = list_folder_images(self.images_dir)
        for note in notes:
            log(note)
        if not names:
            raise UserError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {images_dir}')
        stems: dict[str, str] = {}
        for name in names:
            key = osp.splitext(name)[0].lower()
            if key in stems:
                raise UserError(f'{stems[key]} and {name} in {images_dir} would share the record '
                                f'{osp.splitext(name)[0]}.json; rename one of them')
            stems[key] = name
        self.order = names
        self.cases: dict[str, Case] = {}
        # The model's landmark names (LandmarkPredictor has them), so that even a folder whose
        # images are all reviewed is checked against the model.
        self.names: list[str] = list(getattr(predictor, 'names', None) or [])
        self.pending = [name for name in names if self.load_saved(name) is None]
        self.failed: dict[str, str] = {}
        self.failure: Optional[str] = None     # why background prediction stopped, if it did
        self.total = len(self.pending)
        self.thread = None
        if background and self.pending:
            self.thread = threading.Thread(target=self._predict_in_background,
                                           args=(predictor, batch_size), daemon=True)
            self.thread.start()
        else:
            self._predict(predictor, batch_size)
            if not self.cases:
                raise UserError(f'none of the images in {self.images_dir} could be read')

    @staticmethod
    def check_options(images_dir: str, out_dir: str, score_threshold: float = 0.3,
                      mm_per_pixel: Optional[float] = None) -> None:
        """UserError for options that cannot work (called before a model is loaded)."""
        if not osp.isdir(images_dir):
            raise UserError(f'--images {images_dir} is not a folder; give the folder of '
                            'photographs')
        if osp.exists(out_dir) and not osp.isdir(out_dir):
            raise UserError(f'--out-dir {out_dir} is a file; give a folder for the reviewed '
                            'records')
        check_score_threshold(score_threshold)
        check_mm_per_pixel(mm_per_pixel)

    @property
    def estimated(self) -> list[bool]:
        """Per landmark: True for an estimate (a point the photograph cannot show)."""
        return estimated_landmarks(self.names, self.estimated_names)

    @property
    def lines(self) -> list:
        """The S-N, N-A and N-B lines, as inference draws them: pairs of landmark indices."""
        pairs = [(find_landmark(self.names, a), find_landmark(self.names, b))
                 for a, b in ANGLE_LINES]
        return [(i, j) for i, j in pairs if i is not None and j is not None]

    # -- predictions -------------------------------------------------------------------------
    def _predict_in_background(self, predictor, batch_size: int) -> None:
        try:
            self._predict(predictor, batch_size)
        except UserError as error:
            self.failure = str(error)
            self.log(f'error: {error}')
        except Exception as error:   # a bug: keep the server up, say so on the page and the log
            self.failure = f'prediction stopped ({type(error).__name__}: {error})'
            self.log(self.failure)

    def _predict(self, predictor, batch_size: int) -> None:
        while True:
            with self.lock:
                batch = self.pending[:batch_size]
            if not batch:
                return
            chunk, pictures = [], []
            for name in batch:
                try:
                    pictures.append(read_rgb(osp.join(self.images_dir, name)))
                    chunk.append(name)
                except UserError as error:
                    self.log(f'left out {name}: {error}')
                    self.failed[name] = str(error)
            predictions = predictor.predict(pictures) if chunk else []
            with self.lock:
                for name, picture, prediction in zip(chunk, pictures, predictions):
                    self._check_names(prediction.names, name)
                    self.cases[name] = self._new_case(name, picture, prediction)
                self.pending = [name for name in self.pending if name not in batch]
                done = self.total - len(self.pending)
            self.log(f'predicted {done}/{self.total} images')

    def _new_case(self, name: str, picture: np.ndarray, prediction) -> Case:
        height, width = picture.shape[:2]
        keypoints = np.asarray(prediction.keypoints, float).reshape(-1, 2)
        scores = np.asarray(prediction.scores, float).reshape(-1)
        # A model that gives no number (NaN, infinity) for a point: put it in the middle of the
        # photograph with score 0, so it is marked for review, never an error.
        bad = ~np.isfinite(keypoints).all(axis=1) | ~np.isfinite(scores)
        keypoints = np.where(bad[:, None], [[width / 2, height / 2]], keypoints)
        keypoints = np.clip(keypoints, 0, [width, height])
        scores = np.where(bad, 0.0, scores)
        flagged = [int(i) for i in np.flatnonzero(bad)]
        if flagged:
            self.log(f'{name}: the model gave no position for {len(flagged)} landmark(s); they '
                     'are placed in the middle and marked for review')
        keypoints = round_points(keypoints)
        bbox = tuple(float(v) if math.isfinite(float(v)) else 0.0 for v in prediction.bbox)
        radius90 = getattr(prediction, 'radius90', None)
        if radius90 is not None:
            radius90 = np.where(bad, np.inf, np.asarray(radius90, float).reshape(-1))
        framing = getattr(prediction, 'framing', None) or {}
        reason = framing.get('review_reason')
        if reason:
            self.log(f'{name}: {reason}')
        return Case(name, osp.splitext(name)[0], (width, height), bbox, keypoints, scores,
                    keypoints.copy(), False, flagged=flagged, radius90=radius90,
                    interval_scale=getattr(prediction, 'interval_scale', None),
                    framing_reason=reason)

    def unsure(self, case: Case) -> np.ndarray:
        """(K,) which of the model's points to check: a low score, or (with an error calibration)
        a 90% radius wider than the review radius (2 mm, or 2% of the face box width); every
        point when framing found no reliable face."""
        low = ~(case.scores >= self.score_threshold)
        if case.framing_reason:
            return np.ones(len(low), bool)
        if case.radius90 is None:
            return low
        limit = review_radius(case.bbox, self.spacing(case.calibration))
        return low | ~(case.radius90 <= (np.inf if limit is None else limit))

    def doubt(self, case: Case) -> float:
        """How much a case needs a look, for the order of the list: its widest 90% radius over
        the review radius with an error calibration (largest expected error first), else
        1 - its lowest score; a case whose framing found no reliable face comes first."""
        if case.framing_reason:
            return math.inf
        if case.radius90 is not None:
            limit = review_radius(case.bbox, self.spacing(case.calibration))
            if limit:
                return float(np.max(case.radius90) / limit)
        return 1.0 - float(case.scores.min())

    def progress(self) -> dict:
        with self.lock:
            return {'done': self.total - len(self.pending), 'total': self.total,
                    'failure': self.failure}

    def _check_names(self, names: Sequence[str], source: str) -> None:
        if not self.names:
            self.names = list(names)
        elif list(names) != self.names:
            raise UserError(f'{source} has the landmarks {list(names)} but this model predicts '
                            f'{self.names}; move it away or use another --out-dir')

    # -- records -----------------------------------------------------------------------------
    def record_path(self, stem: str) -> str:
        return osp.join(self.out_dir, f'{stem}.json')

    def load_saved(self, name: str) -> Optional[Case]:
        """The saved review of image `name` as a Case (stored in self.cases), or None if none."""
        stem = osp.splitext(name)[0]
        path = self.record_path(stem)
        if not osp.isfile(path):
            return None
        case = read_record(path, name)
        self._check_names(case.names, path)
        del case.names
        self.cases[name] = case
        return case

    # -- requests ----------------------------------------------------------------------------------
    def case(self, name: str) -> Case:
        """The case of image `name`; RequestError for anything not listed in the images folder."""
        if not isinstance(name, str):
            raise RequestError(422, '"image" must be the file name of an image (a JSON string)')
        if '/' in name or '\\' in name or name in ('.', '..') \
                or osp.isabs(name):
            raise RequestError(403, 'refused: an image is named by its plain file name in the '
                                    'images folder (no folders, "..", or absolute paths)')
        with self.lock:
            case = self.cases.get(name)
            if case is None and name in self.pending:
                raise RequestError(409, f'{name} is still being predicted; it opens when ready')
        if case is None:
            raise RequestError(404, f'unknown image {name!r}; pick one from the list')
        return case

    def image_file(self, name: str) -> str:
        """Path of image `name`, checked again now: refused if it has become a link out."""
        path = osp.join(self.images_dir, self.case(name).name)
        if not inside(self.images_dir, path):
            raise RequestError(403, f'refused: {name} links outside the images folder')
        if not osp.isfile(path):
            raise RequestError(404, f'{name} is no longer in the images folder')
        return path

    def pixels(self, name: str) -> np.ndarray:
        try:
            return read_rgb(self.image_file(name))
        except UserError as error:
            raise RequestError(404, str(error)) from None

    def parse_points(self, name: str, points) -> np.ndarray:
        """(K, 2) coordinates from a browser's [[x, y] or null, ...] (null: not visible), rounded
        once (round_points); RequestError if anything is off."""
        case = self.case(name)
        count = len(self.names)
        if not isinstance(points, list) or len(points) != count:
            raise RequestError(422, f'"landmarks" must be a list of {count} [x, y] pairs (null '
                                    'for a landmark that is not visible)')
        width, height = case.size
        out = np.full((count, 2), np.nan)
        for index, pair in enumerate(points):
            if pair is None:
                continue
            values = [_number(v) for v in pair] if isinstance(pair, list) and len(pair) == 2 else []
            if len(values) != 2 or None in values:
                raise RequestError(422, f'landmark {index + 1} ({self.names[index]}) must be '
                                        '[x, y] with two finite numbers, or null if not visible')
            x, y = values
            if not (0 <= x <= width and 0 <= y <= height):
                raise RequestError(422, f'landmark {index + 1} ({self.names[index]}) at ({x:g}, '
                                        f'{y:g}) lies outside the {width}x{height} image')
            out[index] = values
        return round_points(out)

    def parse_calibration(self, name: str, data) -> Optional[dict]:
        """{"points": [[x, y], [x, y]], "length_mm": L} (or null: none) -> the calibration."""
        if data is None:
            return None
        case = self.case(name)
        message = ('"calibration" must be {"points": [[x, y], [x, y]], "length_mm": L}: the two '
                   'ends of a known distance in the photograph and its length in mm')
        if not isinstance(data, dict) or not isinstance(data.get('points'), list) \
                or len(data['points']) != 2:
            raise RequestError(422, message)
        points = []
        for pair in data['points']:
            values = [_number(v) for v in pair] if isinstance(pair, list) and len(pair) == 2 else []
            if len(values) != 2 or None in values:
                raise RequestError(422, message)
            if not (0 <= values[0] <= case.size[0] and 0 <= values[1] <= case.size[1]):
                raise RequestError(422, 'the calibration points must lie inside the image')
            points.append(values)
        points = round_points(points)
        length = _number(data.get('length_mm'))
        if length is None or not 0 < length <= 10_000:
            raise RequestError(422, 'the calibration length must be a positive number of mm '
                                    '(at most 10000)')
        distance = float(np.hypot(*(points[1] - points[0])))
        if distance < 2:
            raise RequestError(422, 'the two calibration points are less than 2 px apart; click '
                                    'the two ends of the known distance')
        return {'points': points.tolist(), 'length_mm': length,
                'mm_per_pixel': float(f'{length / distance:.6g}')}

    def spacing(self, calibration: Optional[dict]) -> Optional[float]:
        """mm per pixel for a photograph: its own calibration, else --mm-per-pixel, else None."""
        return calibration['mm_per_pixel'] if calibration else self.mm_per_pixel

    def measurements(self, coords: np.ndarray, calibration: Optional[dict] = None) -> dict:
        """The one rounding of measurements (the class is an integer, decided before rounding)."""
        values = compute_measurements(self.names, round_points(coords),
                                      mm_per_pixel=self.spacing(calibration))
        return {k: (int(v) if k == 'skeletal_class' else round(float(v), ROUND_VALUES))
                for k, v in values.items() if k == 'skeletal_class' or math.isfinite(float(v))}

    def certainty(self, case: Case, coords: np.ndarray,
                  calibration: Optional[dict] = None) -> Optional[dict]:
        """The 90% interval of every measurement and the class probabilities of the tracing
        `coords` (`uncertainty.tracing_certainty`), rounded as the measurements are: from the
        model's 90% radii, a point the reviewer moved counting as exact (a person placed it).
        None without an error calibration, for a case that cannot be traced, and while a point
        the model gave no position for has not been moved."""
        if case.radius90 is None or case.status == 'cannot trace':
            return None
        coords = round_points(coords)
        radius = np.where(corrected_points(coords, case.predicted), 0.0, case.radius90)
        if not np.isfinite(radius).all():
            return None
        found = tracing_certainty(self.names, coords, radius, self.spacing(calibration),
                                  interval_scale=case.interval_scale)
        out = {'intervals': {
            key: [round(float(v), ROUND_VALUES) for v in pair]
            for key, pair in found['intervals'].items() if all(map(math.isfinite, pair))}}
        if 'class_probabilities' in found:
            out['class_probabilities'] = {k: round(float(v), 2)
                                          for k, v in found['class_probabilities'].items()}
            out['class_borderline'] = bool(found['class_borderline'])
        return out

    def record(self, case: Case, coords: Optional[np.ndarray] = None, *,
               status: Optional[str] = None, reason: Optional[str] = None,
               calibration: Optional[dict] = None, reviewer: Optional[str] = None,
               date: Optional[str] = None) -> dict:
        """The JSON record of `case` with `coords` (default: its current points)."""
        coords = round_points(case.current if coords is None else coords)
        status = status or case.status
        status = 'reviewed' if status == 'to review' else status
        prediction = Prediction(self.names, coords, case.scores, case.bbox)
        # Every point has been confirmed by a person, so low model scores no longer withhold the
        # class; only an image too small to hold a face still does.
        note = class_withheld_reason(self.names, np.ones(len(self.names)), case.size,
                                     self.score_threshold)
        measurements = self.measurements(coords, calibration)
        if status == 'cannot trace':
            measurements, note = {}, f'cannot trace: {reason}'
        record = image_record(case.name, prediction, measurements,
                              score_threshold=self.score_threshold, size=case.size,
                              class_note=note)
        corrected = corrected_points(coords, case.predicted)
        for landmark, point, guess, estimate, moved in zip(
                record['landmarks'], coords, case.predicted, self.estimated, corrected):
            landmark['visible'] = bool(np.isfinite(point).all())
            landmark['estimated'] = estimate
            landmark['corrected'] = bool(moved)
            landmark['predicted'] = {'x': round(float(guess[0]), 2), 'y': round(float(guess[1]), 2)}
        record['review'] = {'status': status,
                            'reason': reason if status == 'cannot trace' else None,
                            'reviewer': reviewer, 'date': date or now_utc(), 'model': self.model}
        record['calibration'] = calibration
        return record

    def save(self, name: str, coords: Optional[np.ndarray] = None, *, status: str = 'reviewed',
             reason: Optional[str] = None, calibration: Optional[dict] = None,
             reviewer: Optional[str] = None) -> dict:
        """Write the review of `name` atomically to <out-dir>/<stem>.json; returns the record."""
        case = self.case(name)
        if status not in STATUSES:
            raise RequestError(422, f'"status" must be one of {", ".join(STATUSES)}')
        if status == 'cannot trace':
            if not isinstance(reason, str) or not reason.strip():
                raise RequestError(422, 'say why the case cannot be traced ("reason")')
            reason = ' '.join(reason.split())
            if len(reason) > MAX_REASON or not reason.isprintable():
                raise RequestError(422, f'the reason must be plain text of at most {MAX_REASON} '
                                        'characters')
        else:
            reason = None
        if reviewer is not None and not (isinstance(reviewer, str)
                                         and INITIALS.fullmatch(reviewer)):
            raise RequestError(422, 'the reviewer is given by 1-4 letters of initials (never a '
                                    'patient name)')
        coords = case.current if coords is None else coords
        record = self.record(case, coords, status=status, reason=reason, calibration=calibration,
                             reviewer=reviewer and reviewer.upper())
        os.makedirs(self.out_dir, exist_ok=True)
        write_json(self.record_path(case.stem), record)
        with self.lock:
            case.current = round_points(coords)
            case.reviewed = True
            case.status, case.reason, case.calibration = status, reason, calibration
            case.review = record['review']
        return record

    def listing(self) -> list[dict]:
        """Images to review first, least confident (lowest landmark score) first; then reviewed
        and cannot-trace ones; images still being predicted last."""
        def entry(case: Case) -> dict:
            low = int(np.sum(self.unsure(case)))
            widest = None if case.radius90 is None else float(np.max(case.radius90))
            return {'name': case.name, 'status': case.status if case.reviewed else 'to review',
                    'min_score': round(float(case.scores.min()), 4), 'low_count': low,
                    'max_radius90': None if widest is None or not math.isfinite(widest)
                    else round(widest, 2)}
        with self.lock:
            cases = sorted(self.cases.values(),
                           key=lambda c: (c.reviewed, 0.0 if c.reviewed else -self.doubt(c),
                                          c.name))
            waiting = [{'name': name, 'status': 'predicting', 'min_score': None, 'low_count': 0}
                       for name in self.order if name in self.pending]
        return [entry(case) for case in cases] + waiting

    def detail(self, name: str) -> dict:
        """Everything the page needs to show one image."""
        case = self.case(name)
        # As in the record: a case that cannot be traced has no measurements.
        measurements = {} if case.status == 'cannot trace' else \
            self.measurements(case.current, case.calibration)
        return {'name': case.name, 'status': case.status if case.reviewed else 'to review',
                'reason': case.reason, 'size': list(case.size),
                'points': [None if not np.isfinite(p).all() else p.tolist()
                           for p in round_points(case.current)],
                'predicted': round_points(case.predicted).tolist(),
                'scores': np.round(case.scores, 4).tolist(),
                'unsure': self.unsure(case).tolist(),
                'radius90': None if case.radius90 is None else [
                    round(float(r), 2) if math.isfinite(r) else None for r in case.radius90],
                'flagged': case.flagged, 'framing_reason': case.framing_reason,
                'calibration': case.calibration,
                'review': case.review or None,
                'mm_per_pixel': self.spacing(case.calibration),
                'measurements': measurements, 'marks': marks(measurements),
                'certainty': self.certainty(case, case.current, case.calibration)}

    def session(self) -> dict:
        return {'landmarks': self.names, 'lines': self.lines,
                'help': landmark_help(self.names, self.estimated),
                'estimated': self.estimated,
                'score_threshold': self.score_threshold, 'model': self.model,
                'progress': self.progress()}


def corrected_points(coords: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(K,) which visible points lie off the model's by more than CORRECTED_TOLERANCE (a person
    placed them); a point marked not visible (NaN) is not one."""
    with np.errstate(invalid='ignore'):
        return np.abs(np.asarray(coords, float) - predicted).max(axis=1) > CORRECTED_TOLERANCE


def marks(measurements: dict) -> dict:
    """Per measurement: -2..2, how far outside its norm it lies (see clinical.mark)."""
    return {key: mark(key, value) for key, value in measurements.items()}


def _check_size(value) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMAGE_SIDE
            for v in value):
        raise ValueError('size')
    return value[0], value[1]


def read_record(path: str, name: Optional[str] = None) -> Case:
    """A saved review as a Case (its landmark names in `case.names`); UserError for a file that
    is not such a record (malformed, huge numbers, deep nesting, missing keys, bad sizes)."""
    problem = f'{path} is not a record written by review_app.py; move it away or use another ' \
              '--out-dir'
    try:
        with open(path, encoding='utf-8') as stream:
            record = parse_json(stream.read(1 << 22))
        landmarks = record['landmarks']
        width, height = _check_size(record['size'])
        rows = []
        for lm in landmarks:
            visible = lm.get('visible', True) is not False and lm['x'] is not None
            x, y = (_number(lm['x']), _number(lm['y'])) if visible else (math.nan, math.nan)
            rows.append((str(lm['name']), x, y, _number(lm['score']),
                         _number(lm['predicted']['x']), _number(lm['predicted']['y'])))
        bbox = tuple(float(v) for v in (record.get('bbox') or (0, 0, width, height)))
        review = record.get('review') or {}
        if not isinstance(review, dict):
            raise ValueError('review')
        status = review.get('status', 'reviewed')
        reason = review.get('reason')
        calibration = record.get('calibration')
        if status not in STATUSES or not (reason is None or isinstance(reason, str)):
            raise ValueError('status')
        if calibration is not None:
            spacing = _number(calibration.get('mm_per_pixel'))
            if spacing is None or spacing <= 0 or len(calibration.get('points', ())) != 2:
                raise ValueError('calibration')
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
        raise UserError(problem) from None
    if not rows or any(v is None for row in rows for v in row[1:]) or \
            not all(math.isfinite(v) and 0 <= v <= MAX_IMAGE_SIDE
                    for row in rows for v in row[4:]):
        raise UserError(problem)
    values = np.array([row[1:] for row in rows], float)
    name = name or str(record.get('image'))
    case = Case(name, osp.splitext(osp.basename(path))[0], (width, height), bbox,
                round_points(values[:, 3:5]), values[:, 2], round_points(values[:, 0:2]), True,
                status=status, reason=reason, calibration=calibration,
                review={k: review.get(k) for k in ('status', 'reason', 'reviewer', 'date',
                                                   'model')} if review else {})
    case.names = [row[0] for row in rows]
    return case
