"""Landmark names, their aliases, and forgiving matching of column names.

Every script finds landmarks by *name* through this module, so a dataset with a different landmark
set (ISBI 2015, a 38-point set, ...) works unchanged: measurements that need a landmark the set
lacks are simply omitted. Imports only the standard library.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable, Optional, Sequence

# The 19 landmarks of the photograph dataset, in the order of its pickle columns. Names are the
# column prefixes with surrounding spaces removed ("Gonion _x" -> "Gonion").
STANDARD_LANDMARKS: tuple[str, ...] = (
    'sella', 'nasion', 'A point', 'B point', 'upper 1 tip', 'upper 1 apex', 'lower 1 tip',
    'lower 1 apex', 'ANS', 'PNS', 'Gonion', 'Menton', 'ST Nasion', 'Tip of the nose', 'Subnasal',
    'Upper lip', 'Lower lip', 'ST Pogonion', 'gnathion')

# Canonical key -> other names the same anatomical point goes by (compared after normalize_name).
# The first entry of each tuple is the canonical key itself. Keys are what measurement code asks
# for.
ALIASES: dict[str, tuple[str, ...]] = {
    'sella': ('sella', 's', 'sella turcica'),
    'nasion': ('nasion', 'n'),
    'a point': ('a point', 'a', 'subspinale', 'point a', 'a-point'),
    'b point': ('b point', 'b', 'supramentale', 'point b', 'b-point'),
    'upper 1 tip': ('upper 1 tip', 'upper incisal incision', 'upper incisor tip', 'u1 tip', 'u1'),
    'upper 1 apex': ('upper 1 apex', 'upper incisor apex', 'u1 apex', 'u1a'),
    'lower 1 tip': ('lower 1 tip', 'lower incisal incision', 'lower incisor tip', 'l1 tip', 'l1'),
    'lower 1 apex': ('lower 1 apex', 'lower incisor apex', 'l1 apex', 'l1a'),
    'ans': ('ans', 'anterior nasal spine'),
    'pns': ('pns', 'posterior nasal spine'),
    'gonion': ('gonion', 'go'),
    'menton': ('menton', 'me'),
    'pogonion': ('pogonion', 'pog', 'pg'),
    'gnathion': ('gnathion', 'gn'),
    'orbitale': ('orbitale', 'or'),
    'porion': ('porion', 'po'),
    'articulare': ('articulare', 'ar'),
    'st nasion': ('st nasion', 'soft tissue nasion', "n'"),
    'tip of the nose': ('tip of the nose', 'pronasale', 'nose tip', 'prn'),
    'subnasal': ('subnasal', 'subnasale', 'sn'),
    'upper lip': ('upper lip', 'labrale superius', 'ls'),
    'lower lip': ('lower lip', 'labrale inferius', 'li'),
    'st pogonion': ('st pogonion', 'soft tissue pogonion', "pog'", 'pg\''),
}


def normalize_name(name: str) -> str:
    """Lower-case, trim and collapse runs of spaces/underscores: ' Gonion ' -> 'gonion'."""
    return re.sub(r'[\s_]+', ' ', str(name)).strip().lower()


def is_standard_set(names: Sequence[str]) -> bool:
    """True when `names` are the 19 photograph-dataset landmarks (order and spelling forgiven)."""
    return sorted(map(normalize_name, names)) == sorted(map(normalize_name, STANDARD_LANDMARKS))


def find_landmark(names: Sequence[str], key: str) -> Optional[int]:
    """Index of the landmark `key` (a canonical key or any alias) in `names`, or None.

    An exact (normalised) name match wins over an alias match, so a set that has both 'Pogonion'
    and 'ST Pogonion' resolves each to itself.
    """
    # Remembered per name set: measurement intervals call `compute_measurements` 2K + 1 times
    # per tracing (the review page on every move), and the look-ups were most of its time.
    names = names if isinstance(names, tuple) else tuple(str(n) for n in names)
    return _find_landmark(names, str(key))


@functools.lru_cache(maxsize=4096)
def _find_landmark(names: tuple, key: str) -> Optional[int]:
    wanted = normalize_name(key)
    normalized = [normalize_name(n) for n in names]
    if wanted in normalized:
        return normalized.index(wanted)
    for canonical, aliases in ALIASES.items():
        if wanted == canonical or wanted in aliases:
            for alias in aliases:
                if alias in normalized:
                    return normalized.index(alias)
            return None
    return None


# "<name>_x", "<name> x", "<name>_X", "<name>  x " ... ; the name may itself contain spaces.
_COORD_RE = re.compile(r'^(?P<name>.*?)[\s_]*(?P<axis>[xy])\s*$', re.IGNORECASE)


def split_coordinate_column(column: str) -> Optional[tuple[str, str]]:
    """'Gonion _x' -> ('Gonion', 'x'); 'patient_id' -> None."""
    text = str(column)
    match = _COORD_RE.match(text)
    if not match or not match.group('name').strip():
        return None
    # Require a separator before the axis letter, so a column such as 'index' or 'Sex' is not read
    # as the x coordinate of 'inde'/'Se'.
    head = text.rstrip()[:-1]
    if not head or head[-1] not in ' _':
        return None
    return re.sub(r'\s+', ' ', match.group('name')).strip(), match.group('axis').lower()


class LandmarkColumnError(ValueError):
    """A landmark column has no partner (an `_x` without its `_y` or the reverse)."""


def landmark_columns(columns: Iterable[str]) -> list[tuple[str, str, str]]:
    """Find landmark column pairs, in column order: [(name, x_column, y_column), ...].

    Names are matched forgivingly (case, spaces, `_x`/` x`), and the returned name is the column's
    own spelling with spaces trimmed, so outputs use the names the user wrote.
    Raises LandmarkColumnError for an unpaired coordinate column.
    """
    found: dict[str, dict[str, str]] = {}
    display: dict[str, str] = {}
    order: list[str] = []
    for column in columns:
        parsed = split_coordinate_column(column)
        if parsed is None:
            continue
        name, axis = parsed
        key = normalize_name(name)
        if key not in found:
            found[key] = {}
            display[key] = name
            order.append(key)
        if axis in found[key]:
            raise LandmarkColumnError(
                f'landmark "{name}" has two {axis} columns ({found[key][axis]!r} and {column!r}); '
                'rename or drop one')
        found[key][axis] = column
    pairs = []
    for key in order:
        axes = found[key]
        if set(axes) != {'x', 'y'}:
            have, missing = ('x', 'y') if 'x' in axes else ('y', 'x')
            raise LandmarkColumnError(
                f'column {axes[have]!r} has no matching "_{missing}" column; '
                f'add "{display[key]}_{missing}" or drop {axes[have]!r}')
        pairs.append((display[key], axes['x'], axes['y']))
    return pairs


# Landmarks a face photograph cannot show: bony (skeletal) points and the incisor roots lie under
# the skin, so the model estimates them from the visible profile. Canonical keys of ALIASES; the
# soft-tissue points and the incisor tips (seen when the lips are apart) are not in it.
ESTIMATED_KEYS: frozenset = frozenset({
    'sella', 'nasion', 'a point', 'b point', 'upper 1 apex', 'lower 1 apex', 'ans', 'pns',
    'gonion', 'menton', 'pogonion', 'gnathion', 'orbitale', 'porion', 'articulare'})


def canonical_key(name: str) -> Optional[str]:
    """The ALIASES key of landmark `name` ('Gonion' -> 'gonion', 'Subspinale' -> 'a point'), or
    None for a name this module does not know."""
    wanted = normalize_name(name)
    for canonical, aliases in ALIASES.items():
        if wanted == canonical or wanted in aliases:
            return canonical
    return None


def estimated_landmarks(names: Sequence[str],
                        estimated: Optional[Iterable[str]] = None) -> list[bool]:
    """Per landmark of `names`: True when a photograph cannot show it (an estimate).

    A landmark set may say which of its points are estimates (`estimated`: names of the set);
    otherwise the known skeletal points (ESTIMATED_KEYS) are, and unknown names are not.
    """
    if estimated is not None:
        chosen = {normalize_name(n) for n in estimated}
        return [normalize_name(n) in chosen for n in names]
    return [canonical_key(n) in ESTIMATED_KEYS for n in names]
