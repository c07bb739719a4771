"""Turn the user's table into validated patient records: coordinates, splits, classes, spacing.

Its job: `read_records` checks the whole table and returns a `RecordSet` (the list of `Record`,
one per patient, plus what was learned while reading: landmark names, notes, clipped count, where
the splits and the pixel spacing came from). Reading is forgiving about *layout* and strict about
*content*: anything that would silently produce a wrong dataset (an unpaired coordinate column, a
point outside its image, a duplicate patient, an unknown `set` value) is refused with a
`UserError` that says what is wrong and how to fix it. It writes nothing.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from cephalometric.data.decoding import MAX_IMAGE_SIDE, decode_images, parse_image_size
from cephalometric.data.table import (
    IMAGE_NAMES,
    Columns,
    find_column,
    find_columns,
    is_missing,
    name_some,
)
from cephalometric.errors import UserError, first_line
from cephalometric.json_data import read_json_file
from cephalometric.landmarks import is_standard_set, normalize_name

# Values of the `set` column (compared lower-cased and trimmed) -> split (dataset_reader.SPLITS).
SPLIT_ALIASES = {'train': 'train', 'training': 'train',
                 'dev': 'val', 'val': 'val', 'valid': 'val', 'validation': 'val',
                 'test': 'test', 'testing': 'test'}

# rgb: the photograph; depth: the depth map as a grey picture; rgbd: both, as 4 channels.
IMAGE_SOURCES = ('rgb', 'depth', 'rgbd')
RULER_LENGTH_MM = 10.0
DEFAULT_RULER_IMAGE_SIZE = 600
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
MAX_SEED = 2 ** 32 - 1          # numpy's legacy seeding range; any of them is a fine seed
MAX_RULER_JSON_BYTES = 64 << 20


def _finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))


def check_preparation_options(val_fraction: Optional[float] = None,
                              test_fraction: Optional[float] = None, seed: Any = 0,
                              mm_per_pixel: Optional[float] = None,
                              ruler_image_size: Any = DEFAULT_RULER_IMAGE_SIZE,
                              image_size: Any = None) -> None:
    """Refuse impossible numbers among the preparation options (one line each), before the
    table is read: fractions outside 0..1 or not finite, a seed that is not 0..2**32-1, a ruler
    image size or --image-size that is not a positive number of pixels, a spacing that is not a
    positive finite number."""
    for flag, fraction in (('--val-fraction', val_fraction), ('--test-fraction', test_fraction)):
        if fraction is not None and not (_finite_number(fraction) and 0 <= fraction < 1):
            raise UserError(f'{flag} {fraction} must be at least 0 and below 1, e.g. 0.1')
    if (val_fraction is not None and test_fraction is not None
            and val_fraction + test_fraction >= 1):
        raise UserError(f'--val-fraction {val_fraction} plus --test-fraction {test_fraction} '
                        'leaves no training patients; make them sum to less than 1')
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_))
            and 0 <= seed <= MAX_SEED):
        shown = str(seed) if len(str(seed)) <= 30 else f'{str(seed)[:30]}...'
        raise UserError(f'--seed {shown} must be a whole number from 0 to {MAX_SEED}, e.g. 0')
    if mm_per_pixel is not None and not (_finite_number(mm_per_pixel) and mm_per_pixel > 0):
        raise UserError(f'--mm-per-pixel {mm_per_pixel} must be a positive number, e.g. 0.1')
    if not (isinstance(ruler_image_size, (int, np.integer))
            and not isinstance(ruler_image_size, (bool, np.bool_))
            and 0 < ruler_image_size <= MAX_IMAGE_SIDE):
        shown = str(ruler_image_size)[:30]
        raise UserError(f'--ruler-image-size {shown} must be a positive number of pixels, at '
                        f'most {MAX_IMAGE_SIDE}, e.g. {DEFAULT_RULER_IMAGE_SIZE}')
    parse_image_size(image_size)


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
    depth: Optional[np.ndarray] = None   # RGB-D: (H, W) float32 in the table's units, NaN missing

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass
class RecordSet:
    """The records from `read_records`, plus what was learned while reading them."""
    records: list[Record]
    landmark_names: list[str]
    notes: list[str] = field(default_factory=list)
    clipped: int = 0
    split_source: str = ''
    spacing_source: str = 'none'
    columns: Optional[Columns] = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


def read_patient_ids(df: pd.DataFrame, columns: Columns, notes: list[str]) -> list[str]:
    """Patient ids as text, unique and non-empty; the row index stands in without a column."""
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
        raise UserError(f'the set column has values other than train/dev/val/test: {shown}; fix '
                        'them or drop the set column to split automatically')
    return splits


def random_split(patient_ids: Sequence[str], val_fraction: float, test_fraction: float,
                 seed: int) -> list[str]:
    """A seeded split by patient that does not depend on row order (ids sorted, then permuted)."""
    check_preparation_options(val_fraction, test_fraction, seed)
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
                    f'patient(s): {name_some(described)}; fix the coordinates (pixels, x from 0 to '
                    'the width, y from 0 to the height) or pass --clip to move them onto the '
                    'border')


def _ruler_number(value: Any) -> Optional[float]:
    """A ruler coordinate: None when not marked; ValueError for anything but a number."""
    if value is None:
        return None
    if not _finite_number(value):
        raise ValueError(value)
    return float(value)


def load_ruler_json(path: Union[str, os.PathLike]) -> dict[str, Optional[float]]:
    """Ruler JSON -> {patient_id: ruler length in pixels of the ruler image, or None}.

    Read bounded (`json_data`: size, nesting, integer digits, no NaN/Infinity); a coordinate that
    is not a finite number (text, true, 1e400) is refused, naming the patient."""
    path = Path(path)
    if not path.exists():
        raise UserError(f'ruler file {str(path)!r} does not exist; check --ruler-json')
    if path.is_dir():
        raise UserError(f'ruler file {str(path)!r} is a folder; give the JSON file with '
                        '--ruler-json')
    if not path.is_file():     # a device or pipe (/dev/zero) would be read without end
        raise UserError(f'ruler file {str(path)!r} is not a regular file; give the JSON file '
                        'with --ruler-json')
    try:
        data = read_json_file(str(path), max_bytes=MAX_RULER_JSON_BYTES)
    except (OSError, ValueError, RecursionError, MemoryError) as error:
        raise UserError(f'cannot read ruler file {str(path)!r} as JSON '
                        f'({first_line(error, limit=120)}); give a JSON object keyed by patient '
                        'id') from None
    if not isinstance(data, dict):
        raise UserError(f'ruler file {str(path)!r} holds a {type(data).__name__}; it must be a '
                        'JSON object keyed by patient id')
    keys = ('ruler_point_up_x', 'ruler_point_up_y', 'ruler_point_down_x', 'ruler_point_down_y')
    lengths, bad = {}, []
    for pid, entry in data.items():
        if entry is None:
            lengths[str(pid)] = None
            continue
        if not isinstance(entry, dict):
            bad.append(str(pid)[:40])
            continue
        try:
            values = [_ruler_number(entry.get(key)) for key in keys]
        except ValueError:
            bad.append(str(pid)[:40])
            continue
        if any(v is None for v in values):
            lengths[str(pid)] = None       # a ruler that was not marked: no spacing
            continue
        length = math.hypot(values[2] - values[0], values[3] - values[1])
        lengths[str(pid)] = length if 0 < length < math.inf else None
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
    check_preparation_options(mm_per_pixel=mm_per_pixel, ruler_image_size=ruler_image_size)
    if mm_per_pixel is not None:
        return [float(mm_per_pixel)] * len(patient_ids), f'--mm-per-pixel {mm_per_pixel}'
    if ruler_json is not None:
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


def check_depth_sizes(images: Sequence[np.ndarray], depths: Sequence[np.ndarray],
                      patient_ids: Sequence[str]) -> None:
    """RGB-D: every depth map must be registered to its photograph (same height and width)."""
    wrong = [f'{pid} (photo {image.shape[1]}x{image.shape[0]}, depth '
             f'{depth.shape[1]}x{depth.shape[0]})'
             for pid, image, depth in zip(patient_ids, images, depths)
             if depth.shape[:2] != image.shape[:2]]
    if wrong:
        raise UserError(f'the depth map and the photograph differ in size for {len(wrong)} '
                        f'patient(s): {name_some(wrong)}; --image-source rgbd needs each depth map '
                        'registered to its photograph (same size)')


def read_records(df: pd.DataFrame, image_source: str = 'rgb',
                 image_size: Optional[Union[str, int, tuple]] = None, clip: bool = False,
                 val_fraction: Optional[float] = None, test_fraction: Optional[float] = None,
                 seed: int = 0, mm_per_pixel: Optional[float] = None,
                 mm_per_pixel_column: Optional[str] = None, ruler_json=None,
                 ruler_image_size: int = DEFAULT_RULER_IMAGE_SIZE) -> RecordSet:
    """Validate the table and turn each row into a Record (in table row order).

    Raises UserError for anything that would make a wrong dataset. Decoded uint8 images are views
    of the table's arrays where possible, so this costs little memory beyond the table itself.
    """
    if image_source not in IMAGE_SOURCES:
        raise UserError(f'--image-source {image_source!r} must be rgb, depth or rgbd')
    check_preparation_options(val_fraction, test_fraction, seed, mm_per_pixel, ruler_image_size,
                              image_size)
    size = parse_image_size(image_size)
    notes: list[str] = []
    columns = find_columns(df)
    names = columns.landmark_names
    if not is_standard_set(names):
        notes.append(f'the landmarks are not the standard 19-point photograph set ({len(names)} '
                     'found); measurements needing absent landmarks will be skipped')
    image_column = columns.depth if image_source == 'depth' else columns.image
    if columns.depth is None and image_source in ('depth', 'rgbd'):
        raise UserError(f'--image-source {image_source} needs a depth_feature column, and the '
                        'table has none; use --image-source rgb')
    if image_column is None:
        raise UserError(f'no image column (looked for {", ".join(IMAGE_NAMES)}, any case); name '
                        'the column holding the photographs "Image"')

    patient_ids = read_patient_ids(df, columns, notes)
    if columns.split is not None:
        if val_fraction is not None or test_fraction is not None:
            notes.append('--val-fraction/--test-fraction are ignored: splits come from the set '
                         'column')
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
    depths = [None] * len(images)
    if image_source == 'rgbd':
        depths = decode_images(df, columns.depth, patient_ids, 'depth-map', size)
        check_depth_sizes(images, depths, patient_ids)
    sizes = np.array([(image.shape[1], image.shape[0]) for image in images], np.int64)
    points, clipped = check_coordinates(points, sizes, names, patient_ids, clip)
    if clipped:
        notes.append(f'--clip moved {clipped} landmark(s) onto the image border')

    spacing, spacing_source = read_spacing(df, columns, patient_ids, sizes[:, 0].tolist(), notes,
                                           mm_per_pixel, mm_per_pixel_column, ruler_json,
                                           ruler_image_size)
    records = [Record(pid, image, points[row], split, skeletal, mm, depth)
               for row, (pid, image, split, skeletal, mm, depth)
               in enumerate(zip(patient_ids, images, splits, classes, spacing, depths))]
    return RecordSet(records, list(names), notes, clipped, split_source, spacing_source, columns)
