"""The review app's data: one image folder, the model's predictions, the reviewed records on disk.

Job: map image file names to files inside ONE folder (a name is a key of the listing made at start;
'..', absolute paths and symlinks that leave the folder are refused), keep the predictions, check
coordinates sent by a browser, and read and write the reviewed records
`<out-dir>/<image stem>.json`: the inference JSON layout of `results.image_record` plus, per
landmark, `"corrected": true|false` and `"predicted": {"x", "y"}` (the model's position it
replaced). Measurements come from `measurements.compute_measurements`, nothing else.
No web code here. Imports numpy and the package's `atomic`, `errors`, `images`, `landmarks`,
`measurements`, `predictor` (the Prediction record only) and `results`.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from cephalometric.cli import check_mm_per_pixel, check_score_threshold
from cephalometric.data.images import IMAGE_EXTENSIONS, read_rgb
from cephalometric.errors import UserError
from cephalometric.landmarks import find_landmark
from cephalometric.measurements import ANGLE_LINES, compute_measurements
from cephalometric.prediction.predictor import Prediction
from cephalometric.prediction.results import class_withheld_reason, image_record, write_json

# A corrected point differs from the prediction by more than this (pixels; records keep 0.01 px).
CORRECTED_TOLERANCE = 0.005


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
    predicted: np.ndarray  # (K, 2) the model's positions
    scores: np.ndarray     # (K,) the model's scores
    current: np.ndarray    # (K, 2) saved positions, else the predicted ones
    reviewed: bool


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
    value = float(value)
    return value if math.isfinite(value) else None


class ReviewStore:
    """The images of `images_dir`, predicted by `predictor`, reviewed into `out_dir`.

    `predictor.predict` is called with a list of RGB arrays and returns one prediction per image
    (names, keypoints, scores, bbox), as `LandmarkPredictor.predict` does (face region and facing
    direction found automatically).
    """

    def __init__(self, images_dir: str, out_dir: str, predictor,
                 score_threshold: float = 0.3, mm_per_pixel: Optional[float] = None,
                 batch_size: int = 8, log: Callable[[str], None] = print):
        self.check_options(images_dir, out_dir, score_threshold, mm_per_pixel)
        self.images_dir = osp.abspath(images_dir)
        self.out_dir = osp.abspath(out_dir)
        self.score_threshold = float(score_threshold)
        self.mm_per_pixel = mm_per_pixel
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
        self.cases: dict[str, Case] = {}
        # The model's landmark names (LandmarkPredictor has them), so that even a folder whose
        # images are all reviewed is checked against the model.
        self.names: list[str] = list(getattr(predictor, 'names', None) or [])
        self._predict(names, predictor, batch_size, log)
        # The S-N, N-A and N-B lines, as inference draws them: pairs of landmark indices.
        pairs = [(find_landmark(self.names, a), find_landmark(self.names, b))
                 for a, b in ANGLE_LINES]
        self.lines = [(i, j) for i, j in pairs if i is not None and j is not None]

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

    # -- start-up ----------------------------------------------------------------------------------
    def _predict(self, names: list[str], predictor, batch_size: int, log) -> None:
        pending = []
        for name in names:
            if self.load_saved(name) is None:
                pending.append(name)
        for start in range(0, len(pending), batch_size):
            chunk, pictures = [], []
            for name in pending[start:start + batch_size]:
                try:
                    pictures.append(read_rgb(osp.join(self.images_dir, name)))
                    chunk.append(name)
                except UserError as error:
                    log(f'left out {name}: {error}')
            if not chunk:
                continue
            for name, picture, prediction in zip(chunk, pictures, predictor.predict(pictures)):
                self._check_names(prediction.names, name)
                height, width = picture.shape[:2]
                keypoints = np.asarray(prediction.keypoints, float).reshape(-1, 2)
                self.cases[name] = Case(name, osp.splitext(name)[0], (width, height),
                                        tuple(float(v) for v in prediction.bbox), keypoints,
                                        np.asarray(prediction.scores, float).reshape(-1),
                                        keypoints.copy(), False)
            log(f'predicted {min(start + batch_size, len(pending))}/{len(pending)} images')
        # Keep the folder's order; the listing sorts.
        self.cases = {name: self.cases[name] for name in names if name in self.cases}
        if not self.cases:
            raise UserError(f'none of the images in {self.images_dir} could be read')

    def _check_names(self, names: Sequence[str], source: str) -> None:
        if not self.names:
            self.names = list(names)
        elif list(names) != self.names:
            raise UserError(f'{source} has the landmarks {list(names)} but this model predicts '
                            f'{self.names}; move it away or use another --out-dir')

    def record_path(self, stem: str) -> str:
        return osp.join(self.out_dir, f'{stem}.json')

    def load_saved(self, name: str) -> Optional[Case]:
        """The saved review of image `name` as a Case (stored in self.cases), or None if none."""
        stem = osp.splitext(name)[0]
        path = self.record_path(stem)
        if not osp.isfile(path):
            return None
        problem = f'{path} is not a record written by review_app.py; move it away or use another ' \
                  '--out-dir'
        try:
            with open(path, encoding='utf-8') as stream:
                record = json.load(stream)
            landmarks = record['landmarks']
            width, height = (int(v) for v in record['size'])
            rows = [(lm['name'], _number(lm['x']), _number(lm['y']), _number(lm['score']),
                     _number(lm['predicted']['x']), _number(lm['predicted']['y']))
                    for lm in landmarks]
            bbox = tuple(float(v) for v in (record.get('bbox') or (0, 0, width, height)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserError(problem) from None
        if not rows or any(v is None for row in rows for v in row[1:]):
            raise UserError(problem)
        self._check_names([row[0] for row in rows], path)
        values = np.array([row[1:] for row in rows], float)
        case = Case(name, stem, (width, height), bbox, values[:, 3:5], values[:, 2],
                    values[:, 0:2], True)
        self.cases[name] = case
        return case

    # -- requests ----------------------------------------------------------------------------------
    def case(self, name: str) -> Case:
        """The case of image `name`; RequestError for anything not listed in the images folder."""
        if not isinstance(name, str) or '/' in name or '\\' in name or name in ('.', '..') \
                or osp.isabs(name):
            raise RequestError(403, 'refused: an image is named by its plain file name in the '
                                    'images folder (no folders, "..", or absolute paths)')
        case = self.cases.get(name)
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
        """(K, 2) coordinates from a browser's [[x, y], ...]; RequestError if anything is off."""
        case = self.case(name)
        count = len(self.names)
        if not isinstance(points, list) or len(points) != count:
            raise RequestError(422, f'"landmarks" must be a list of {count} [x, y] pairs')
        width, height = case.size
        out = np.empty((count, 2), float)
        for index, pair in enumerate(points):
            values = [_number(v) for v in pair] if isinstance(pair, list) and len(pair) == 2 else []
            if len(values) != 2 or None in values:
                raise RequestError(422, f'landmark {index + 1} ({self.names[index]}) must be '
                                        '[x, y] with two finite numbers')
            x, y = values
            if not (0 <= x <= width and 0 <= y <= height):
                raise RequestError(422, f'landmark {index + 1} ({self.names[index]}) at ({x:g}, '
                                        f'{y:g}) lies outside the {width}x{height} image')
            out[index] = values
        return out

    def measurements(self, coords: np.ndarray) -> dict:
        values = compute_measurements(self.names, coords, mm_per_pixel=self.mm_per_pixel)
        return {k: (int(v) if k == 'skeletal_class' else round(float(v), 3))
                for k, v in values.items()}

    def record(self, case: Case, coords: Optional[np.ndarray] = None) -> dict:
        """The JSON record of `case` with `coords` (default: its current points)."""
        coords = case.current if coords is None else coords
        prediction = Prediction(self.names, coords, case.scores, case.bbox)
        # Every point has been confirmed by a person, so low model scores no longer withhold the
        # class; only an image too small to hold a face still does.
        note = class_withheld_reason(self.names, np.ones(len(self.names)), case.size,
                                     self.score_threshold)
        record = image_record(case.name, prediction, compute_measurements(
            self.names, coords, mm_per_pixel=self.mm_per_pixel),
            score_threshold=self.score_threshold, size=case.size, class_note=note)
        for landmark, point, guess in zip(record['landmarks'], coords, case.predicted):
            landmark['corrected'] = bool(np.abs(point - guess).max() > CORRECTED_TOLERANCE)
            landmark['predicted'] = {'x': round(float(guess[0]), 2), 'y': round(float(guess[1]), 2)}
        return record

    def save(self, name: str, coords: np.ndarray) -> dict:
        """Write the review of `name` atomically to <out-dir>/<stem>.json; returns the record."""
        case = self.case(name)
        record = self.record(case, coords)
        os.makedirs(self.out_dir, exist_ok=True)
        write_json(self.record_path(case.stem), record)
        case.current = np.array([[lm['x'], lm['y']] for lm in record['landmarks']], float)
        case.reviewed = True
        return record

    def listing(self) -> list[dict]:
        """Images to review first, least confident (lowest landmark score) first; then reviewed."""
        def entry(case: Case) -> dict:
            low = int(np.sum(~(case.scores >= self.score_threshold)))
            return {'name': case.name, 'status': 'reviewed' if case.reviewed else 'to review',
                    'min_score': round(float(case.scores.min()), 4), 'low_count': low}
        cases = sorted(self.cases.values(),
                       key=lambda c: (c.reviewed, 0.0 if c.reviewed else float(c.scores.min()),
                                      c.name))
        return [entry(case) for case in cases]

    def detail(self, name: str) -> dict:
        """Everything the page needs to show one image."""
        case = self.case(name)
        return {'name': case.name, 'status': 'reviewed' if case.reviewed else 'to review',
                'size': list(case.size),
                'points': np.round(case.current, 3).tolist(),
                'predicted': np.round(case.predicted, 3).tolist(),
                'scores': np.round(case.scores, 4).tolist(),
                'measurements': self.measurements(case.current)}

