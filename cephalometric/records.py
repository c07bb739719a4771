"""Load a user's pickled table of face photographs and landmarks into clean, validated records, and
write them out as an MMPose-ready COCO keypoint dataset.

Reading is forgiving about *layout* (column spelling, image storage, landmark set) and strict about
*content*: anything that would silently produce a wrong dataset (an unpaired coordinate column, a
point outside its image, a duplicate patient) is refused with a `UserError` that says what is wrong
and how to fix it. Nothing is written unless everything succeeded.

Public API, reused by other scripts:
    load_table(path) -> DataFrame
    find_columns(df) -> Columns
    decode_image(value, image_size=None) -> (H, W, 3) uint8      (ValueError on a bad shape)
    decode_depth(value, image_size=None) -> (H, W, 3) uint8      (ValueError on a bad shape)
    read_records(df, image_source='rgb', ...) -> Records (a list of Record)
    prepare_dataset(input_path, out_dir, **options) -> summary dict
    format_summary(summary) -> str
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import cv2
import numpy as np
import pandas as pd

from .drawing import landmark_color
from .errors import UserError
from .landmarks import LandmarkColumnError, is_standard_set, landmark_columns, normalize_name

SPLITS = ('train', 'val', 'test')
# Values of the `set` column (compared lower-cased and trimmed) -> split.
SPLIT_ALIASES = {'train': 'train', 'training': 'train',
                 'dev': 'val', 'val': 'val', 'valid': 'val', 'validation': 'val',
                 'test': 'test', 'testing': 'test'}

# Column roles -> accepted names, compared after normalize_name ('Patient_ID' -> 'patient id').
IMAGE_NAMES = ('image', 'img', 'images', 'photo')
DEPTH_NAMES = ('depth feature', 'depth', 'depth map')
PATIENT_NAMES = ('patient id', 'patientid', 'patient')
SET_NAMES = ('set', 'split', 'subset')
CLASS_NAMES = ('class', 'skeletal class')
SPACING_NAMES = ('mm per pixel', 'pixel spacing', 'mm per px')

RULER_LENGTH_MM = 10.0
DEFAULT_RULER_IMAGE_SIZE = 600
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
PNG_COMPRESSION = 1          # lossless either way; level 1 is the fastest and barely larger
KEYPOINT_SIGMA = 0.025       # OKS sigma per landmark (MMPose needs one; only used by COCO-style eval)
SHOW_AT_MOST = 5             # ids named in an error message before "and N more"


# --------------------------------------------------------------------------------------------------
# Small helpers


def name_some(items: Sequence[Any], limit: int = SHOW_AT_MOST) -> str:
    """'a, b, c' or 'a, b, c, d, e and 3 more', so errors stay one readable line."""
    items = [str(item) for item in items]
    shown = ', '.join(items[:limit])
    return shown if len(items) <= limit else f'{shown} and {len(items) - limit} more'


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA or NaT in a table cell (an array in a cell is never "missing")."""
    try:
        return np.ndim(value) == 0 and bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def patient_id_text(value: Any) -> Optional[str]:
    """A patient id as text; 12.0 -> '12' (pandas turns int columns with gaps into floats)."""
    if is_missing(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    text = str(value).strip()
    return text or None


def natural_key(text: str) -> tuple:
    """Sort key that puts 'p2' before 'p10'; the tuples never compare str with int."""
    return tuple((0, int(part), '') if part[0] in '0123456789' else (1, 0, part)
                 for part in re.split(r'([0-9]+)', text) if part)


def safe_file_stem(patient_id: str) -> str:
    """A patient id usable as a file name on any system: keep [A-Za-z0-9._-], replace the rest."""
    return re.sub(r'[^A-Za-z0-9._-]', '_', patient_id)


def parse_image_size(value: Union[None, int, str, Sequence[int]]) -> Optional[tuple[int, int]]:
    """None -> None; 224 or '224' -> (224, 224); '484x600' -> (484, 600), as (width, height)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = value
    else:
        match = re.fullmatch(r'\s*(\d+)\s*(?:[xX*,]\s*(\d+)\s*)?', str(value))
        if not match:
            raise UserError(f'--image-size {value!r} is not a size; give N for NxN images or '
                            'WIDTHxHEIGHT such as 484x600')
        width = int(match.group(1))
        height = int(match.group(2)) if match.group(2) else width
    if int(width) <= 0 or int(height) <= 0:
        raise UserError(f'--image-size {value!r} must be positive; give N or WIDTHxHEIGHT')
    return int(width), int(height)


# --------------------------------------------------------------------------------------------------
# Loading the table


def load_table(path: Union[str, os.PathLike]) -> pd.DataFrame:
    """Unpickle `path` into a non-empty DataFrame (a list of dicts is converted).

    Unpickling runs code from the file, so only the user's own trusted files should be given.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f'input file {str(path)!r} does not exist; check the path given with --input')
    if path.is_dir():
        raise UserError(f'input {str(path)!r} is a folder; give the pickle file inside it with --input')
    try:
        table = pd.read_pickle(path)
    except PermissionError:
        raise UserError(f'cannot read {str(path)!r}: permission denied; check the file permissions') from None
    except Exception as error:  # unpickling garbage can raise almost anything; all mean "not a pickle"
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UserError(f'{str(path)!r} is not a readable pandas pickle ({type(error).__name__}: '
                        f'{reason}); save the table with DataFrame.to_pickle') from None
    if isinstance(table, list) and table and all(isinstance(row, dict) for row in table):
        table = pd.DataFrame(table)
    if not isinstance(table, pd.DataFrame):
        raise UserError(f'{str(path)!r} holds a {type(table).__name__}, not a table; pickle a pandas '
                        'DataFrame with one row per patient (DataFrame.to_pickle)')
    if len(table) == 0:
        raise UserError(f'the table in {str(path)!r} has no rows; it needs one row per patient')
    return table


# --------------------------------------------------------------------------------------------------
# Finding columns


@dataclass
class Columns:
    """Which column of the table plays which role (None when absent)."""
    landmarks: list[tuple[str, str, str]]        # (name as written, x column, y column), column order
    image: Optional[str] = None
    depth: Optional[str] = None
    patient_id: Optional[str] = None
    split: Optional[str] = None
    skeletal_class: Optional[str] = None
    mm_per_pixel: Optional[str] = None

    @property
    def landmark_names(self) -> list[str]:
        return [name for name, _, _ in self.landmarks]


def find_column(columns: Iterable[Any], names: Sequence[str], role: str) -> Optional[Any]:
    """The one column whose normalised name is in `names`; UserError if several match."""
    matches = [column for column in columns if normalize_name(column) in names]
    if len(matches) > 1:
        raise UserError(f'several columns could be the {role}: {name_some(map(repr, matches))}; '
                        'rename or drop all but one')
    return matches[0] if matches else None


def find_columns(df: pd.DataFrame) -> Columns:
    """Locate the image, id, set, class, spacing and landmark columns, forgiving spelling."""
    columns = list(df.columns)
    found = Columns(
        landmarks=[],
        image=find_column(columns, IMAGE_NAMES, 'image column'),
        depth=find_column(columns, DEPTH_NAMES, 'depth column'),
        patient_id=find_column(columns, PATIENT_NAMES, 'patient id column'),
        split=find_column(columns, SET_NAMES, 'set (split) column'),
        skeletal_class=find_column(columns, CLASS_NAMES, 'class column'),
        mm_per_pixel=find_column(columns, SPACING_NAMES, 'pixel spacing column'))
    # Role columns never count as landmarks, even if a name happened to end in "_x".
    taken = {found.image, found.depth, found.patient_id, found.split, found.skeletal_class,
             found.mm_per_pixel} - {None}
    try:
        found.landmarks = landmark_columns(c for c in columns if c not in taken)
    except LandmarkColumnError as error:
        raise UserError(str(error)) from None
    if not found.landmarks:
        raise UserError('no landmark columns found; landmarks must be column pairs named '
                        '"<name>_x" and "<name>_y" (for example sella_x, sella_y) in pixels')
    return found


# --------------------------------------------------------------------------------------------------
# Decoding images


def _as_array(value: Any) -> np.ndarray:
    if is_missing(value):
        raise ValueError('no image in this row')
    try:
        array = np.asarray(value)
    except ValueError:  # numpy >= 1.24 refuses ragged nested lists
        raise ValueError('the nested list is ragged (rows of different lengths)') from None
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError('the image is not an array of numbers') from None
    if array.size == 0:
        raise ValueError('the image is empty')
    return array


def _unflatten(array: np.ndarray, image_size: Optional[tuple[int, int]]) -> np.ndarray:
    """(H*W, C) -> (H, W, C), the size given as (width, height) or inferred as a square."""
    pixels = array.shape[0]
    if image_size is not None:
        width, height = image_size
        if width * height != pixels:
            raise ValueError(f'a flat image of {pixels} pixels cannot be {width}x{height}; '
                             'check --image-size (WIDTHxHEIGHT)')
    else:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f'a flat image of {pixels} pixels is not square; give its size with '
                             '--image-size WIDTHxHEIGHT')
        width = height = side
    return array.reshape(height, width, *array.shape[1:])


def _to_hwc(array: np.ndarray, image_size: Optional[tuple[int, int]]) -> np.ndarray:
    """Any accepted RGB/grayscale layout -> (H, W, C) with C in 1, 3, 4."""
    shape = array.shape
    if array.ndim == 2 and shape[1] in (1, 3, 4):        # flat: one row per pixel
        return _unflatten(array, image_size)
    if array.ndim == 2:                                   # (H, W) grayscale
        return array[:, :, None]
    if array.ndim == 3 and shape[2] in (1, 3, 4):         # (H, W, C)
        return array
    if array.ndim == 3 and shape[0] in (1, 3):            # (C, H, W), as torch stores images
        return np.moveaxis(array, 0, -1)
    raise ValueError(f'shape {shape} is not an image; expected (H, W, 3), (H, W), (H, W, 1) '
                     'or flat (H*W, 3)')


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 as is; integers in 0..255; floats in [0, 1] (scaled by 255) or [0, 255]."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f'pixels of type {array.dtype} are not numbers')
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError('the image has NaN or infinite pixel values')
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise ValueError(f'pixel values run from {low:g} to {high:g}; expected 0..255 or 0..1')
    if np.issubdtype(array.dtype, np.floating):
        # Floats that never exceed 1 are taken as [0, 1] intensities (the usual ML convention).
        scaled = array * 255.0 if high <= 1.0 else array
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return array.astype(np.uint8)


def decode_image(value: Any, image_size: Optional[Union[str, int, tuple]] = None) -> np.ndarray:
    """An image cell (array or nested list, flat or not, gray or RGB) -> (H, W, 3) uint8 RGB.

    `image_size` (N, 'N', 'WxH' or (W, H)) is only needed for flat images that are not square.
    Raises ValueError with a readable reason when the shape or values cannot be understood.
    """
    size = parse_image_size(image_size)
    array = _to_hwc(_as_array(value), size)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f'shape {array.shape} has no pixels')
    if array.shape[2] == 4:       # RGBA: the alpha channel carries no anatomy
        array = array[:, :, :3]
    image = _to_uint8(array)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def decode_depth(value: Any, image_size: Optional[Union[str, int, tuple]] = None) -> np.ndarray:
    """A depth cell ((H*W,), (H*W, 1), (H, W) or (H, W, 1)) -> (H, W, 3) uint8.

    Each map is stretched to 0..255 using its own finite min/max (depth units differ between
    captures, and the network only needs relative shape); NaN/inf become 0.
    """
    size = parse_image_size(image_size)
    array = _as_array(value)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f'depth values of type {array.dtype} are not numbers')
    array = array.astype(np.float64)
    if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
        array = _unflatten(array.reshape(-1), size)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim != 2:
        raise ValueError(f'depth shape {array.shape} is not understood; expected (H*W,), '
                         '(H*W, 1), (H, W) or (H, W, 1)')
    finite = np.isfinite(array)
    scaled = np.zeros(array.shape, np.float64)
    if finite.any():
        low, high = float(array[finite].min()), float(array[finite].max())
        if high > low:
            scaled[finite] = (array[finite] - low) * (255.0 / (high - low))
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------------------------------
# Records


@dataclass
class Record:
    """One patient, ready to write. `keypoints` is (K, 2) in image pixels with NaN for missing."""
    patient_id: str
    image: np.ndarray
    keypoints: np.ndarray
    split: str
    skeletal_class: Optional[int] = None
    mm_per_pixel: Optional[float] = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


class Records(list):
    """The list of Record from `read_records`, plus what was learned while reading them."""

    def __init__(self, items: Iterable[Record], landmark_names: Sequence[str],
                 notes: Sequence[str] = (), clipped: int = 0, split_source: str = '',
                 spacing_source: str = 'none', columns: Optional[Columns] = None):
        super().__init__(items)
        self.columns = columns
        self.landmark_names = list(landmark_names)
        self.notes = list(notes)
        self.clipped = clipped
        self.split_source = split_source
        self.spacing_source = spacing_source


def read_patient_ids(df: pd.DataFrame, columns: Columns, notes: list[str]) -> list[str]:
    """Patient ids as text, unique and non-empty; the row index stands in when there is no column."""
    if columns.patient_id is None:
        notes.append('no patient_id column: using the row index as the patient id')
        raw = list(df.index)
    else:
        raw = list(df[columns.patient_id])
    ids = [patient_id_text(value) for value in raw]
    empty = [position for position, pid in enumerate(ids) if pid is None]
    if empty:
        raise UserError(f'{len(empty)} rows have no patient id (row positions '
                        f'{name_some(empty)}); fill in the patient_id column')
    counts = Counter(ids)
    duplicates = [f'{pid} ({count} rows)' for pid, count in counts.items() if count > 1]
    if duplicates:
        raise UserError(f'duplicate patient ids: {name_some(duplicates)}; each row must be a '
                        'different patient, so remove or rename the repeated rows')
    return ids


def split_from_set_column(values: Sequence[Any], patient_ids: Sequence[str]) -> list[str]:
    """Map the `set` column (train/dev/val/valid/validation/test, any case) to split names."""
    splits, unknown = [], Counter()
    for value in values:
        text = '' if is_missing(value) else str(value)
        split = SPLIT_ALIASES.get(text.strip().lower())
        if split is None:
            unknown[repr(text) if text else 'empty'] += 1
        splits.append(split)
    if unknown:
        shown = name_some([f'{value} ({count} rows)' for value, count in sorted(unknown.items())])
        raise UserError(f'the set column has values other than train/dev/val/test: {shown}; fix them '
                        'or drop the set column to split automatically')
    return splits


def random_split(patient_ids: Sequence[str], val_fraction: float, test_fraction: float,
                 seed: int) -> list[str]:
    """A seeded split by patient that does not depend on row order (ids sorted, then permuted)."""
    for flag, fraction in (('--val-fraction', val_fraction), ('--test-fraction', test_fraction)):
        if not 0 <= fraction < 1:
            raise UserError(f'{flag} {fraction} must be at least 0 and below 1, e.g. 0.1')
    if val_fraction + test_fraction >= 1:
        raise UserError(f'--val-fraction {val_fraction} plus --test-fraction {test_fraction} leaves '
                        'no training patients; make them sum to less than 1')
    order = sorted(patient_ids, key=natural_key)
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]

    def count(fraction: float) -> int:   # at least one patient for any non-zero fraction
        return max(1, int(round(len(order) * fraction))) if fraction > 0 else 0

    num_test, num_val = count(test_fraction), count(val_fraction)
    assigned = {pid: 'test' for pid in order[:num_test]}
    assigned.update({pid: 'val' for pid in order[num_test:num_test + num_val]})
    return [assigned.get(pid, 'train') for pid in patient_ids]


def check_splits(splits: Sequence[str], from_set_column: bool, num_patients: int) -> None:
    """Training needs train rows and validation rows (to pick the best checkpoint)."""
    present = set(splits)
    if 'train' not in present:
        fix = ('mark some rows "train" in the set column, or drop the set column to split '
               'automatically') if from_set_column else \
            f'lower --val-fraction/--test-fraction ({num_patients} patients)'
        raise UserError(f'the train split is empty; {fix}')
    if 'val' not in present:
        fix = ('add dev rows to the set column, or drop the set column to split automatically'
               if from_set_column else
               'use a --val-fraction above 0 (e.g. 0.1)')
        raise UserError(f'the validation split is empty (it chooses the best checkpoint); {fix}')


def skeletal_class_value(value: Any) -> Optional[int]:
    """1, '2', 3.0, 'II', 'Class III' -> int; empty -> None; ValueError for anything else."""
    if is_missing(value):
        return None
    text = re.sub(r'^class\s*', '', str(value).strip().lower())
    roman = {'i': 1, 'ii': 2, 'iii': 3}
    if text in roman:
        return roman[text]
    number = float(text)            # ValueError for text that is not a number
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def read_skeletal_classes(values: Sequence[Any], patient_ids: Sequence[str]) -> list[Optional[int]]:
    """The `class` column as ints (or None where empty), refusing values that are not a class."""
    classes, bad = [], []
    for pid, value in zip(patient_ids, values):
        try:
            classes.append(skeletal_class_value(value))
        except ValueError:
            classes.append(None)
            bad.append(f'{pid} ({value!r})')
    if bad:
        raise UserError(f'the class column is not a skeletal class (1, 2 or 3) for patients '
                        f'{name_some(bad)}; fix those values or drop the class column')
    return classes


def _number_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_numeric_columns(df: pd.DataFrame, names: Sequence[str], patient_ids: Sequence[str],
                         what: str) -> np.ndarray:
    """Columns as a float array (rows, columns); text that is not a number is an error, not NaN."""
    values = np.empty((len(df), len(names)), np.float64)
    bad = []
    for index, name in enumerate(names):
        original = df[name]
        try:
            numbers = pd.to_numeric(original, errors='coerce')
        except TypeError:   # cells holding lists or arrays: judge them one by one
            numbers = pd.Series([_number_or_nan(v) for v in original], index=original.index)
        broken = numbers.isna().to_numpy() & original.notna().to_numpy()
        bad += [f'{patient_ids[row]} ({name})' for row in np.flatnonzero(broken)]
        values[:, index] = numbers.to_numpy(np.float64, na_value=np.nan)
    if bad:
        raise UserError(f'{what} that are not numbers: {name_some(bad)}; use numbers, or leave the '
                        'cell empty (NaN) for a missing value')
    return values


def decode_images(df: pd.DataFrame, column: str, patient_ids: Sequence[str], source: str,
                  image_size: Optional[tuple[int, int]]) -> list[np.ndarray]:
    """Decode every row, collecting all failures into one error that names the patients."""
    decode = decode_depth if source == 'depth' else decode_image
    images, failures = [], []
    for pid, value in zip(patient_ids, df[column].to_numpy()):
        try:
            images.append(decode(value, image_size))
        except ValueError as error:
            failures.append((pid, str(error)))
    if failures:
        kind = 'depth map' if source == 'depth' else 'image'
        raise UserError(f'cannot read the {kind} of {len(failures)} patient(s) '
                        f'({name_some([pid for pid, _ in failures])}): {failures[0][1]}')
    return images


def check_coordinates(points: np.ndarray, sizes: np.ndarray, names: Sequence[str],
                      patient_ids: Sequence[str], clip: bool) -> tuple[np.ndarray, int]:
    """Keep points inside [0, W] x [0, H]; clip them (with `clip`) or refuse naming them.

    `points` is (N, K, 2), `sizes` (N, 2) as (width, height). Returns (points, number clipped).
    """
    limits = sizes[:, None, :].astype(np.float64)
    with np.errstate(invalid='ignore'):
        outside = np.any((points < 0) | (points > limits), axis=2)   # NaN compares False
    if not outside.any():
        return points, 0
    if clip:
        clipped = np.where(np.isnan(points), np.nan, np.clip(points, 0, limits))
        return clipped, int(outside.sum())
    rows = np.flatnonzero(outside.any(axis=1))
    described = [f'{patient_ids[row]} ({", ".join(names[k] for k in np.flatnonzero(outside[row]))})'
                 for row in rows]
    raise UserError(f'{int(outside.sum())} landmark(s) lie outside their image for {len(rows)} '
                    f'patient(s): {name_some(described)}; fix the coordinates (pixels, x from 0 to the '
                    'width, y from 0 to the height) or pass --clip to move them onto the border')


def load_ruler_json(path: Union[str, os.PathLike]) -> dict[str, Optional[float]]:
    """Ruler JSON -> {patient_id: ruler length in pixels of the ruler image, or None}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise UserError(f'ruler file {str(path)!r} does not exist; check --ruler-json') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f'cannot read ruler file {str(path)!r} as JSON ({error}); give a JSON '
                        'object keyed by patient id') from None
    if not isinstance(data, dict):
        raise UserError(f'ruler file {str(path)!r} holds a {type(data).__name__}; it must be a JSON '
                        'object keyed by patient id')
    keys = ('ruler_point_up_x', 'ruler_point_up_y', 'ruler_point_down_x', 'ruler_point_down_y')
    lengths, bad = {}, []
    for pid, entry in data.items():
        if entry is None:
            lengths[str(pid)] = None
            continue
        if not isinstance(entry, dict):
            bad.append(str(pid))
            continue
        try:
            values = [None if entry.get(key) is None else float(entry[key]) for key in keys]
        except (TypeError, ValueError):
            bad.append(str(pid))
            continue
        if any(v is None or not math.isfinite(v) for v in values):
            lengths[str(pid)] = None       # a ruler that was not marked: no spacing
            continue
        length = math.hypot(values[2] - values[0], values[3] - values[1])
        lengths[str(pid)] = length if length > 0 else None
    if bad:
        raise UserError(f'ruler file {str(path)!r} has unreadable entries for patients '
                        f'{name_some(bad)}; each must be an object with numeric '
                        f'{", ".join(keys)}')
    return lengths


def read_spacing(df: pd.DataFrame, columns: Columns, patient_ids: Sequence[str],
                 widths: Sequence[int], notes: list[str], mm_per_pixel: Optional[float],
                 mm_per_pixel_column: Optional[str], ruler_json, ruler_image_size: int
                 ) -> tuple[list[Optional[float]], str]:
    """Millimetres per pixel of each prepared image (None when unknown), and where it came from."""
    given = [flag for flag, value in (('--mm-per-pixel', mm_per_pixel),
                                      ('--mm-per-pixel-column', mm_per_pixel_column),
                                      ('--ruler-json', ruler_json)) if value is not None]
    if len(given) > 1:
        raise UserError(f'{" and ".join(given)} both set the pixel spacing; give only one of them')
    if mm_per_pixel is not None:
        if not (math.isfinite(mm_per_pixel) and mm_per_pixel > 0):
            raise UserError(f'--mm-per-pixel {mm_per_pixel} must be a positive number, e.g. 0.1')
        return [float(mm_per_pixel)] * len(patient_ids), f'--mm-per-pixel {mm_per_pixel}'
    if ruler_json is not None:
        if not ruler_image_size or ruler_image_size <= 0:
            raise UserError(f'--ruler-image-size {ruler_image_size} must be a positive number of pixels')
        lengths = load_ruler_json(ruler_json)
        absent = [pid for pid in patient_ids if pid not in lengths]
        if absent:
            notes.append(f'the ruler file has no entry for {len(absent)} patient(s) '
                         f'({name_some(absent)}); they have no pixel spacing')
        if columns.mm_per_pixel is not None:
            notes.append(f'--ruler-json is used instead of the {columns.mm_per_pixel!r} column')
        # mm/px in the ruler image, rescaled to the prepared image (same square crop, resized).
        spacing = [None if lengths.get(pid) is None else
                   RULER_LENGTH_MM / lengths[pid] * (ruler_image_size / width)
                   for pid, width in zip(patient_ids, widths)]
        return spacing, f'--ruler-json {ruler_json} (ruler image {ruler_image_size} px)'
    column = columns.mm_per_pixel
    if mm_per_pixel_column is not None:
        column = find_column(df.columns, (normalize_name(mm_per_pixel_column),), 'spacing column')
        if column is None:
            raise UserError(f'--mm-per-pixel-column {mm_per_pixel_column!r} is not a column of the '
                            'table; check its spelling')
    if column is None:
        return [None] * len(patient_ids), 'none'
    values = read_numeric_columns(df, [column], patient_ids, f'pixel spacings in {column!r}')[:, 0]
    return [float(v) if math.isfinite(v) and v > 0 else None for v in values], f'column {column!r}'


def read_records(df: pd.DataFrame, image_source: str = 'rgb',
                 image_size: Optional[Union[str, int, tuple]] = None, clip: bool = False,
                 val_fraction: Optional[float] = None, test_fraction: Optional[float] = None,
                 seed: int = 0, mm_per_pixel: Optional[float] = None,
                 mm_per_pixel_column: Optional[str] = None, ruler_json=None,
                 ruler_image_size: int = DEFAULT_RULER_IMAGE_SIZE) -> Records:
    """Validate the table and turn each row into a Record (in table row order).

    Raises UserError for anything that would make a wrong dataset. Decoded uint8 images are views
    of the table's arrays where possible, so this costs little memory beyond the table itself.
    """
    if image_source not in ('rgb', 'depth'):
        raise UserError(f'--image-source {image_source!r} must be rgb or depth')
    size = parse_image_size(image_size)
    notes: list[str] = []
    columns = find_columns(df)
    names = columns.landmark_names
    if not is_standard_set(names):
        notes.append(f'the landmarks are not the standard 19-point photograph set ({len(names)} '
                     'found); measurements needing absent landmarks will be skipped')
    image_column = columns.depth if image_source == 'depth' else columns.image
    if image_column is None and image_source == 'depth':
        raise UserError('--image-source depth needs a depth_feature column, and the table has none; '
                        'use --image-source rgb')
    if image_column is None:
        raise UserError(f'no image column (looked for {", ".join(IMAGE_NAMES)}, any case); name the '
                        'column holding the photographs "Image"')

    patient_ids = read_patient_ids(df, columns, notes)
    if columns.split is not None:
        if val_fraction is not None or test_fraction is not None:
            notes.append('--val-fraction/--test-fraction are ignored: splits come from the set column')
        splits = split_from_set_column(df[columns.split].tolist(), patient_ids)
        split_source = f'column {columns.split!r}'
    else:
        val = DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
        test = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
        splits = random_split(patient_ids, val, test, seed)
        split_source = f'random by patient (seed {seed}, val {val:g}, test {test:g})'
    check_splits(splits, columns.split is not None, len(patient_ids))
    classes = (read_skeletal_classes(df[columns.skeletal_class].tolist(), patient_ids)
               if columns.skeletal_class is not None else [None] * len(patient_ids))

    coordinate_columns = [c for _, x, y in columns.landmarks for c in (x, y)]
    points = read_numeric_columns(df, coordinate_columns, patient_ids, 'landmark coordinates')
    points = points.reshape(len(df), len(names), 2)
    # A point with either coordinate missing is missing as a whole.
    points[np.isnan(points).any(axis=2)] = np.nan
    images = decode_images(df, image_column, patient_ids, image_source, size)
    sizes = np.array([(image.shape[1], image.shape[0]) for image in images], np.int64)
    points, clipped = check_coordinates(points, sizes, names, patient_ids, clip)
    if clipped:
        notes.append(f'--clip moved {clipped} landmark(s) onto the image border')

    spacing, spacing_source = read_spacing(df, columns, patient_ids, sizes[:, 0].tolist(), notes,
                                           mm_per_pixel, mm_per_pixel_column, ruler_json,
                                           ruler_image_size)
    records = [Record(pid, image, points[row], split, skeletal, mm)
               for row, (pid, image, split, skeletal, mm)
               in enumerate(zip(patient_ids, images, splits, classes, spacing))]
    return Records(records, names, notes, clipped, split_source, spacing_source, columns)


# --------------------------------------------------------------------------------------------------
# Writing the prepared dataset


def _number(value: float, digits: int = 3) -> float:
    return round(float(value), digits) + 0.0     # + 0.0 turns -0.0 into 0.0 for stable JSON


def order_records(records: Sequence[Record]) -> list[Record]:
    """train, val, test; patients in natural id order within each, so ids ignore row order."""
    rank = {split: index for index, split in enumerate(SPLITS)}
    return sorted(records, key=lambda r: (rank[r.split], natural_key(r.patient_id), r.patient_id))


def file_names(records: Sequence[Record]) -> dict[str, str]:
    """patient_id -> PNG file name; refuse ids that become the same file (ignoring case, for
    macOS/Windows file systems)."""
    names = {r.patient_id: safe_file_stem(r.patient_id) + '.png' for r in records}
    groups: dict[str, list[str]] = {}
    for pid, name in names.items():
        groups.setdefault(name.lower(), []).append(pid)
    clashes = [' / '.join(map(repr, pids)) for pids in groups.values() if len(pids) > 1]
    if clashes:
        raise UserError(f'patient ids that give the same image file name: {name_some(clashes)}; '
                        'rename them (file names keep only letters, digits, ".", "_" and "-", and '
                        'ignore case)')
    return names


def coco_entries(record: Record, image_id: int, file_name: str) -> tuple[dict, dict]:
    """The COCO image and annotation dicts for one record."""
    width, height = record.width, record.height
    keypoints, visible = [], 0
    for x, y in record.keypoints:
        if np.isnan(x) or np.isnan(y):
            keypoints += [0.0, 0.0, 0]
        else:
            keypoints += [_number(x), _number(y), 2]
            visible += 1
    image = {'id': image_id, 'file_name': file_name, 'width': width, 'height': height,
             'patient_id': record.patient_id}
    annotation = {'id': image_id, 'image_id': image_id, 'category_id': 1, 'keypoints': keypoints,
                  'num_keypoints': visible, 'bbox': [0, 0, width, height], 'area': width * height,
                  'iscrowd': 0, 'mm_per_pixel': record.mm_per_pixel,
                  'skeletal_class': record.skeletal_class}
    return image, annotation


def coco_files(records: Sequence[Record], names: Sequence[str],
               file_name_of: dict[str, str]) -> dict[str, dict]:
    """split -> COCO dict; image ids start at 1 and are unique across all splits."""
    category = {'id': 1, 'name': 'face', 'supercategory': 'face', 'keypoints': list(names),
                'skeleton': []}
    files = {split: {'info': {'description': f'cephalometric landmarks, {split} split',
                              'version': '1.0', 'split': split},
                     'images': [], 'annotations': [], 'categories': [category]}
             for split in SPLITS}
    for image_id, record in enumerate(order_records(records), start=1):
        image, annotation = coco_entries(record, image_id, file_name_of[record.patient_id])
        files[record.split]['images'].append(image)
        files[record.split]['annotations'].append(annotation)
    return files


def metainfo_text(names: Sequence[str]) -> str:
    """MMPose dataset meta, loaded with dict(from_file=...). Landmarks on the profile have no
    left/right partner, so `swap` is empty."""
    lines = ['# MMPose dataset meta for the prepared cephalometric dataset.',
             '# Written by prepare_cephalometric_data.py; load with dict(from_file=<this file>).',
             'dataset_info = dict(',
             "    dataset_name='cephalometric',",
             "    paper_info=dict(author='', title='', container='', year='', homepage=''),",
             '    keypoint_info={']
    for index, name in enumerate(names):
        # the same colour per landmark as in our own pictures (MMPose's visualiser uses this one)
        colour = list(landmark_color(index))
        lines.append(f"        {index}: dict(name={name!r}, id={index}, color={colour}, "
                     "type='', swap=''),")
    lines += ['    },',
              '    skeleton_info={},',
              f'    joint_weights={[1.0] * len(names)},',
              f'    sigmas={[KEYPOINT_SIGMA] * len(names)})',
              '']
    return '\n'.join(lines)


def write_png(path: Path, image: np.ndarray) -> None:
    # imencode + write (not imwrite) so non-ASCII paths work on every OS; OpenCV wants BGR.
    ok, buffer = cv2.imencode('.png', cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f'OpenCV could not encode {path.name}')
    path.write_bytes(buffer.tobytes())


def write_images(records: Sequence[Record], folder: Path, file_name_of: dict[str, str],
                 progress: bool, workers: Optional[int]) -> None:
    from tqdm import tqdm
    workers = workers or min(8, os.cpu_count() or 1)
    # PNG encoding releases the GIL, so threads give real parallelism without copying images.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(lambda r: write_png(folder / file_name_of[r.patient_id], r.image), records)
        for _ in tqdm(jobs, total=len(records), desc='writing images', unit='img',
                      disable=not progress):
            pass


def write_json(path: Path, data: Any, indent: Optional[int] = None) -> None:
    separators = (',', ': ') if indent else (',', ':')
    path.write_text(json.dumps(data, indent=indent, sort_keys=True, separators=separators,
                               allow_nan=False) + '\n', encoding='utf-8')


def _class_counts(records: Sequence[Record]) -> dict[str, int]:
    counts = Counter('unknown' if r.skeletal_class is None else str(r.skeletal_class) for r in records)
    return {key: counts[key] for key in sorted(counts, key=natural_key)}


def build_summary(records: Records, has_class: bool, input_path: Path,
                  options: dict) -> dict:
    """Everything the closing table shows, machine-readable."""
    per_split = {}
    for split in SPLITS:
        chosen = [r for r in records if r.split == split]
        sizes = Counter(f'{r.width}x{r.height}' for r in chosen)
        entry = {'images': len(chosen),
                 'image_sizes': dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
                 'missing_landmarks': int(sum(np.isnan(r.keypoints[:, 0]).sum() for r in chosen)),
                 'with_mm_per_pixel': sum(r.mm_per_pixel is not None for r in chosen)}
        if has_class:
            entry['classes'] = _class_counts(chosen)
        per_split[split] = entry
    all_sizes = Counter(f'{r.width}x{r.height}' for r in records)
    standard = is_standard_set(records.landmark_names)
    return {
        'input': str(input_path),
        'options': options,
        'landmarks': records.landmark_names,
        'num_landmarks': len(records.landmark_names),
        'landmark_set': 'standard 19-landmark photograph set' if standard else
                        f'custom set of {len(records.landmark_names)} landmarks',
        'total_images': len(records),
        'image_sizes': dict(sorted(all_sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
        'missing_landmarks': sum(s['missing_landmarks'] for s in per_split.values()),
        'clipped_landmarks': records.clipped,
        'split_source': records.split_source,
        'spacing_source': records.spacing_source,
        'splits': per_split,
        'notes': records.notes + [
            'the test split is written for final evaluation only: training uses train, and the '
            'best checkpoint is chosen on val'],
    }


def _sizes_text(sizes: dict[str, int], limit: int = 3) -> str:
    items = list(sizes.items())
    if len(items) == 1:
        return items[0][0]
    text = ', '.join(f'{size} ({count})' for size, count in items[:limit])
    return text + (f', +{len(items) - limit} more' if len(items) > limit else '')


def format_summary(summary: dict) -> str:
    """The closing table printed by the CLI."""
    has_class = any('classes' in s for s in summary['splits'].values())
    header = ['split', 'images', 'image sizes', 'missing landmarks', 'mm/px known']
    if has_class:
        header.append('classes')
    rows = []
    for split, entry in summary['splits'].items():
        row = [split, str(entry['images']), _sizes_text(entry['image_sizes']) or '-',
               str(entry['missing_landmarks']), f"{entry['with_mm_per_pixel']}/{entry['images']}"]
        if has_class:
            row.append(' '.join(f'{k}:{v}' for k, v in entry['classes'].items()) or '-')
        rows.append(row)
    total = sum(s['with_mm_per_pixel'] for s in summary['splits'].values())
    row = ['total', str(summary['total_images']), _sizes_text(summary['image_sizes']),
           str(summary['missing_landmarks']), f"{total}/{summary['total_images']}"]
    rows.append(row + ([''] if has_class else []))
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    table = ['  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [header] + rows]
    lines = [f"landmarks: {summary['num_landmarks']} ({summary['landmark_set']})",
             f"splits: {summary['split_source']}",
             f"pixel spacing: {summary['spacing_source']}",
             *table]
    lines += [f'note: {note}' for note in summary['notes']]
    return '\n'.join(lines)


def looks_prepared(folder: Path) -> bool:
    """True for an empty folder or one this module wrote, the only kinds --overwrite may replace."""
    entries = {entry.name for entry in folder.iterdir()}
    return not entries or 'summary.json' in entries or 'annotations' in entries


def check_out_dir(out_dir: Path, input_path: Path, overwrite: bool) -> None:
    """Refuse early, before reading a large pickle, when the output cannot be (re)placed."""
    if input_path.resolve().is_relative_to(out_dir.resolve()):
        raise UserError(f'the input {str(input_path)!r} is inside the output folder {str(out_dir)!r}; '
                        'choose another --out-dir')
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f'--out-dir {str(out_dir)!r} is a file; choose a folder path')
    if out_dir.exists():
        if not overwrite:
            raise UserError(f'{str(out_dir)!r} already exists; pass --overwrite to replace it, or '
                            'choose another --out-dir')
        if not looks_prepared(out_dir):
            raise UserError(f'{str(out_dir)!r} exists and is not a prepared dataset, so --overwrite '
                            'will not delete it; choose another --out-dir')


def move_into_place(temporary: Path, out_dir: Path) -> None:
    """Rename the finished folder onto `out_dir`; an old dataset is swapped out, then deleted."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f'.{out_dir.name}.old-{uuid.uuid4().hex[:8]}'
        os.replace(out_dir, old)
    try:
        os.replace(temporary, out_dir)
    except OSError:
        if old is not None:
            os.replace(old, out_dir)   # put the previous dataset back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_dataset(input_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], *,
                    image_size=None, image_source: str = 'rgb', val_fraction: Optional[float] = None,
                    test_fraction: Optional[float] = None, seed: int = 0,
                    mm_per_pixel: Optional[float] = None, mm_per_pixel_column: Optional[str] = None,
                    ruler_json=None, ruler_image_size: int = DEFAULT_RULER_IMAGE_SIZE,
                    clip: bool = False, overwrite: bool = False, progress: bool = True,
                    workers: Optional[int] = None) -> dict:
    """Read `input_path`, validate it, and write the prepared dataset to `out_dir` atomically.

    Everything is written to `<parent>/.<name>.tmp-XXXX` first and renamed into place only once
    complete, so a failure (or Ctrl-C) never leaves a half-written dataset. Returns the summary
    that is also saved as summary.json.
    """
    input_path, out_dir = Path(input_path), Path(out_dir)
    check_out_dir(out_dir, input_path, overwrite)
    table = load_table(input_path)
    records = read_records(table, image_source=image_source, image_size=image_size, clip=clip,
                           val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           mm_per_pixel=mm_per_pixel, mm_per_pixel_column=mm_per_pixel_column,
                           ruler_json=ruler_json, ruler_image_size=ruler_image_size)
    file_name_of = file_names(records)
    options = {'image_size': None if image_size is None else str(image_size),
               'image_source': image_source, 'val_fraction': val_fraction,
               'test_fraction': test_fraction, 'seed': seed, 'mm_per_pixel': mm_per_pixel,
               'mm_per_pixel_column': mm_per_pixel_column,
               'ruler_json': None if ruler_json is None else str(Path(ruler_json).resolve()),
               'ruler_image_size': ruler_image_size, 'clip': clip}
    has_class = records.columns.skeletal_class is not None
    summary = build_summary(records, has_class, input_path.resolve(), options)
    del table

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.tmp-', dir=out_dir.parent))
    try:
        (temporary / 'images').mkdir()
        (temporary / 'annotations').mkdir()
        write_images(records, temporary / 'images', file_name_of, progress, workers)
        for split, coco in coco_files(records, records.landmark_names, file_name_of).items():
            write_json(temporary / 'annotations' / f'{split}.json', coco)
        (temporary / 'metainfo.py').write_text(metainfo_text(records.landmark_names),
                                               encoding='utf-8')
        write_json(temporary / 'summary.json', summary, indent=2)
        move_into_place(temporary, out_dir)
    except OSError as error:
        raise UserError(f'could not write the dataset to {str(out_dir)!r} ({error}); check free disk '
                        'space and permissions') from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)   # a no-op once it has been moved into place
    return summary
