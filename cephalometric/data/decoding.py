"""Decode the image and depth cells of the user's table into RGB uint8 arrays.

Its job: every accepted storage of a photograph (flat `(H*W, 3)`, `(H, W, 3)`, grayscale,
`(3, H, W)`, uint8 / 0..1 floats / 0..255 floats, nested lists) or a depth map becomes an
`(H, W, 3)` uint8 image (`decode_image`, `decode_depth`, which raise ValueError with a readable
reason); for RGB-D, `decode_raw_depth` keeps a depth map's values (float32, NaN where missing, see
`depth`). A whole column is decoded at once with every failure collected into one UserError
(`decode_images`).
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from cephalometric.data.depth import clean_depth
from cephalometric.data.table import is_missing, name_some
from cephalometric.errors import UserError

MAX_IMAGE_SIDE = 65535      # pixels: the largest side a prepared PNG (and OpenCV) handles well


def parse_image_size(value: Union[None, int, str, Sequence[int]]) -> Optional[tuple[int, int]]:
    """None -> None; 224 or '224' -> (224, 224); '484x600' -> (484, 600), as (width, height)."""
    if value is None:
        return None
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + '...'
    if isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = value
    else:
        match = re.fullmatch(r'\s*(\d{1,9})\s*(?:[xX*,]\s*(\d{1,9})\s*)?', str(value)[:100])
        if not match:
            raise UserError(f'--image-size {shown} is not a size; give N for NxN images or '
                            f'WIDTHxHEIGHT such as 484x600 (1..{MAX_IMAGE_SIDE} pixels a side)')
        width = int(match.group(1))
        height = int(match.group(2)) if match.group(2) else width
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               and 0 < v <= MAX_IMAGE_SIDE for v in (width, height)):
        raise UserError(f'--image-size {shown} must be whole numbers of pixels 1..'
                        f'{MAX_IMAGE_SIDE}; give N or WIDTHxHEIGHT')
    return int(width), int(height)

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
    if max(array.shape[:2]) > MAX_IMAGE_SIDE:
        raise ValueError(f'shape {array.shape} has a side over {MAX_IMAGE_SIDE} pixels')
    if array.shape[2] == 4:       # RGBA: the alpha channel carries no anatomy
        array = array[:, :, :3]
    image = _to_uint8(array)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def depth_map(value: Any, image_size: Optional[Union[str, int, tuple]] = None) -> np.ndarray:
    """A depth cell ((H*W,), (H*W, 1), (H, W) or (H, W, 1)) -> (H, W) float64, values as given."""
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
    return array


def decode_depth(value: Any, image_size: Optional[Union[str, int, tuple]] = None) -> np.ndarray:
    """A depth cell ((H*W,), (H*W, 1), (H, W) or (H, W, 1)) -> (H, W, 3) uint8.

    Each map is stretched to 0..255 using its own finite min/max (depth units differ between
    captures, and the network only needs relative shape); NaN/inf become 0.
    """
    array = depth_map(value, image_size)
    finite = np.isfinite(array)
    scaled = np.zeros(array.shape, np.float64)
    if finite.any():
        low, high = float(array[finite].min()), float(array[finite].max())
        if high > low:
            scaled[finite] = (array[finite] - low) * (255.0 / (high - low))
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def decode_raw_depth(value: Any, image_size: Optional[Union[str, int, tuple]] = None
                     ) -> np.ndarray:
    """A depth cell -> (H, W) float32 in the table's units, NaN where missing (RGB-D storage)."""
    return clean_depth(depth_map(value, image_size))


def decode_images(df: pd.DataFrame, column: str, patient_ids: Sequence[str], source: str,
                  image_size: Optional[tuple[int, int]]) -> list[np.ndarray]:
    """Decode every row, collecting all failures into one error that names the patients."""
    decode = {'depth': decode_depth, 'depth-map': decode_raw_depth}.get(source, decode_image)
    images, failures = [], []
    for pid, value in zip(patient_ids, df[column].to_numpy()):
        try:
            images.append(decode(value, image_size))
        except ValueError as error:
            failures.append((pid, str(error)))
    if failures:
        kind = 'depth map' if source in ('depth', 'depth-map') else 'image'
        raise UserError(f'cannot read the {kind} of {len(failures)} patient(s) '
                        f'({name_some([pid for pid, _ in failures])}): {failures[0][1]}')
    return images
