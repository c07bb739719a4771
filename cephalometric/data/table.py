"""Read the user's pickled table and find which column plays which role.

Its job: unpickle the input into a non-empty DataFrame (`load_table`) and match its columns, with
forgiving spelling, to the roles the preparation needs (image, depth, patient id, set, class,
pixel spacing, landmark x/y pairs: `find_columns`), plus the two small cell helpers every reader of
the table shares (`is_missing`, `name_some`). Loading a pickle runs code from the file, so only
the user's own trusted files may be given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from cephalometric.errors import UserError, first_line
from cephalometric.landmarks import LandmarkColumnError, landmark_columns, normalize_name

# Column roles -> accepted names, compared after normalize_name ('Patient_ID' -> 'patient id').
IMAGE_NAMES = ('image', 'img', 'images', 'photo')
DEPTH_NAMES = ('depth feature', 'depth', 'depth map')
PATIENT_NAMES = ('patient id', 'patientid', 'patient')
SET_NAMES = ('set', 'split', 'subset')
CLASS_NAMES = ('class', 'skeletal class')
SPACING_NAMES = ('mm per pixel', 'pixel spacing', 'mm per px')

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


# --------------------------------------------------------------------------------------------------
# Loading the table


def load_table(path: Union[str, os.PathLike]) -> pd.DataFrame:
    """Unpickle `path` into a non-empty DataFrame (a list of dicts is converted).

    Unpickling runs code from the file, so only the user's own trusted files should be given.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f'input file {str(path)!r} does not exist; check the path given with '
                        '--input')
    if path.is_dir():
        raise UserError(f'input {str(path)!r} is a folder; give the pickle file inside it with '
                        '--input')
    try:
        table = pd.read_pickle(path)
    except PermissionError:
        raise UserError(f'cannot read {str(path)!r}: permission denied; check the file '
                        'permissions') from None
    except Exception as error:  # unpickling garbage can raise anything; all mean "not a pickle"
        reason = first_line(error, limit=200)
        raise UserError(f'{str(path)!r} is not a readable pandas pickle ({type(error).__name__}: '
                        f'{reason}); save the table with DataFrame.to_pickle') from None
    if isinstance(table, list) and table and all(isinstance(row, dict) for row in table):
        table = pd.DataFrame(table)
    if not isinstance(table, pd.DataFrame):
        raise UserError(f'{str(path)!r} holds a {type(table).__name__}, not a table; pickle a '
                        'pandas DataFrame with one row per patient (DataFrame.to_pickle)')
    if len(table) == 0:
        raise UserError(f'the table in {str(path)!r} has no rows; it needs one row per patient')
    return table


# --------------------------------------------------------------------------------------------------
# Finding columns


@dataclass
class Columns:
    """Which column of the table plays which role (None when absent)."""
    landmarks: list[tuple[str, str, str]]   # (name as written, x column, y column), column order
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
