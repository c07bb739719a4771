"""Depth maps beside photographs (RGB-D): how they are stored, read and turned into a channel.

Its job, shared by preparation, training and prediction so that all three treat depth alike:

- Storage: a prepared RGB-D dataset keeps each depth map as `<stem>.npy` beside `<stem>.png`: a
  float32 (H, W) array in the table's own units (metres, millimetres: whatever the sensor gave),
  with every missing reading (NaN, +-inf, or a value <= 0, which sensors use for 'no return')
  stored as NaN. Nothing else is changed, so the file is the table's depth, losslessly for
  float32 and 16-bit sensor data. `.npy` files are read with `allow_pickle=False`: a file from
  someone else is data, never code.
- Reading a user's depth for inference (`read_depth_file`): such an `.npy` (any real dtype, 2-D),
  or a single-channel 16-bit PNG/TIFF as depth cameras write them (0 = no reading).
- The network's depth channel (`depth_channel`): each map is scaled by itself, because units
  and camera distance differ between captures and the relief is what matters: the nearest 1 % of
  valid readings map to 255, the farthest 1 % to 1 ("nearness", clipped), and a missing reading
  is 0. Training augmentation pads with 0 too ('no depth'). The model's data preprocessor then
  normalises this channel with DEPTH_MEAN/DEPTH_STD (`mmpose_plugins.rgbd`).
- Matching depth files to photographs by stem (`match_depth_files`), with one-line refusals.
"""
from __future__ import annotations

import os
import os.path as osp
import warnings
from typing import Optional, Sequence

import cv2
import numpy as np

from cephalometric.data.images import _native_stderr_silenced as native_stderr_silenced
from cephalometric.errors import UserError, first_line

DEPTH_SUFFIX = '.npy'
DEPTH_FILE_EXTENSIONS = ('.npy', '.png', '.tif', '.tiff')
# Channel order of a 4-channel model input, as recorded in checkpoints and ONNX metadata.
RGB_INPUTS = ('rgb',)
RGBD_INPUTS = ('rgb', 'depth')
# The robust range of each map (percentiles of its valid readings) that spans the channel.
NEAR_PERCENTILE, FAR_PERCENTILE = 1.0, 99.0
# What the data preprocessor subtracts and divides by: 0..255 -> about -1..1, like the photo.
DEPTH_MEAN, DEPTH_STD = 127.5, 127.5
MAX_DEPTH_BYTES = 512 * 1024 * 1024
# Larger than any depth camera's frame (a 12k x 5k map); a file whose header claims more is refused
# before anything is allocated.
MAX_DEPTH_PIXELS = 64 * 1024 * 1024
NPY_MAX_HEADER_BYTES = 10000      # numpy's own limit for np.load


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """float32 copy with every missing reading (non-finite or <= 0) as NaN."""
    values = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        missing = ~np.isfinite(values) | (values <= 0)
    cleaned = values.astype(np.float32)
    cleaned[missing | ~np.isfinite(cleaned)] = np.nan
    return cleaned


def depth_channel(depth: np.ndarray) -> np.ndarray:
    """A depth map (any units, NaN/<=0 missing) -> float32 nearness 1..255, 0 where missing."""
    values = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(values) & (values > 0)
    channel = np.zeros(values.shape, np.float32)
    if not valid.any():
        return channel
    near, far = np.percentile(values[valid], (NEAR_PERCENTILE, FAR_PERCENTILE))
    if far > near:
        nearness = np.clip((far - values[valid]) / (far - near), 0.0, 1.0)
        channel[valid] = 1.0 + 254.0 * nearness
    else:                                   # a flat map: no relief to show
        channel[valid] = 128.0
    return channel


def save_depth(path: str, depth: np.ndarray) -> None:
    """Write a cleaned float32 depth map as .npy (no pickling)."""
    with open(path, 'wb') as stream:
        np.save(stream, clean_depth(depth), allow_pickle=False)


def _check_header_size(width: int, height: int, what: str) -> None:
    """Refuse a map whose header claims more pixels than any depth camera gives."""
    if not (0 < width and 0 < height and width * height <= MAX_DEPTH_PIXELS):
        claim = (f'{width}x{height} pixels' if max(width, height) < 10 ** 12
                 else 'an impossible size')
        raise ValueError(f'{what} claims {claim}; at most {MAX_DEPTH_PIXELS} pixels are read')


def _read_npy(path: str) -> np.ndarray:
    """The array of an .npy file whose header is checked first (dtype, shape, bytes against the
    file's size), so a header claiming terabytes allocates nothing; ValueError otherwise."""
    file_size = osp.getsize(path)
    with open(path, 'rb') as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                stream, max_header_size=NPY_MAX_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                stream, max_header_size=NPY_MAX_HEADER_BYTES)
        else:
            raise ValueError(f'.npy format version {version} is not read')
        offset = stream.tell()
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in 'biuf':
            raise ValueError(f'it holds {dtype}, not plain numbers')
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise ValueError(f'its header has shape {shape!r}')
        if len(shape) == 3 and shape[2] == 1:
            map_shape = shape[:2]
        else:
            map_shape = shape
        if len(map_shape) != 2:
            raise ValueError(f'it has shape {shape}, not one (H, W) map')
        _check_header_size(map_shape[1], map_shape[0], 'its header')
        needed = map_shape[0] * map_shape[1] * dtype.itemsize
        if needed > MAX_DEPTH_BYTES:
            raise ValueError(f'its header claims {needed} bytes, more than the {MAX_DEPTH_BYTES} '
                             'read')
        if file_size - offset < needed:
            raise ValueError(f'the file is truncated ({file_size - offset} of {needed} bytes of '
                             'data)')
        data = np.fromfile(stream, dtype=dtype, count=map_shape[0] * map_shape[1])
    if data.size != map_shape[0] * map_shape[1]:
        raise ValueError('the file is truncated')
    return data.reshape(map_shape, order='F' if fortran else 'C')


def _image_header_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG's or TIFF's header, without decoding the pixels."""
    with open(path, 'rb') as stream:
        head = stream.read(32)
    if head[:8] == b'\x89PNG\r\n\x1a\n':
        if len(head) < 24 or head[12:16] != b'IHDR':
            raise ValueError('the PNG header is damaged')
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    from PIL import Image  # reads the first TIFF directory only; pixels stay on disk
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')       # Pillow's warnings about damaged or large files
        try:
            with Image.open(path) as picture:
                return picture.size
        except Image.DecompressionBombError:
            raise ValueError(f'its header claims more than {MAX_DEPTH_PIXELS} pixels') from None


def read_depth_file(path: str) -> np.ndarray:
    """A depth file -> float32 (H, W), NaN where missing; UserError (one line) otherwise.

    Sizes are bounded before anything is allocated: the .npy header's shape and dtype (checked
    against the file's length), the PNG/TIFF header's width and height (MAX_DEPTH_PIXELS)."""
    path = os.fspath(path)
    extension = osp.splitext(path)[1].lower()
    fix = ('give a 2-D .npy array or a single-channel 16-bit PNG/TIFF (0 = no reading) of the '
           'same size as the photograph')
    if not osp.isfile(path):
        raise UserError(f'depth file not found: {path}; {fix}')
    if extension == '.npy':
        try:
            array = _read_npy(path)
        except (OSError, ValueError, EOFError, TypeError, OverflowError, MemoryError,
                SyntaxError) as error:
            reason = first_line(error, limit=160)
            raise UserError(f'cannot read depth file {path} ({reason}); {fix}') from None
    elif extension in DEPTH_FILE_EXTENSIONS:
        try:
            _check_header_size(*_image_header_size(path), 'its header')
            with native_stderr_silenced():      # libpng's and libtiff's own complaints
                array = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        except ValueError as error:
            raise UserError(f'cannot read depth file {path} ({first_line(error, limit=160)}); '
                            f'{fix}') from None
        except Exception:   # OpenCV or Pillow on a damaged file: cannot read it
            array = None
        if array is None:
            raise UserError(f'cannot read depth file {path}; {fix}')
    else:
        raise UserError(f'depth file {path} is not .npy, .png or .tif; {fix}')
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 or array.size == 0:
        raise UserError(f'depth file {path} has shape {array.shape}, not one (H, W) map; {fix}')
    if array.dtype.kind not in 'biuf':
        raise UserError(f'depth file {path} does not hold numbers; {fix}')
    return clean_depth(array)


def check_depth_size(depth: np.ndarray, shape: Sequence[int], what: str) -> None:
    """Refuse a depth map whose (H, W) differs from its photograph's."""
    if tuple(depth.shape[:2]) != tuple(shape[:2]):
        raise UserError(f'{what}: the depth map is {depth.shape[1]}x{depth.shape[0]} but the '
                        f'photograph is {shape[1]}x{shape[0]}; give the depth map registered to '
                        'the photograph (same size)')


def match_depth_files(images: Sequence[str], depth_path: Optional[str],
                      option: str = '--depth-path') -> list[str]:
    """One depth file per image: `depth_path` is a file (one image) or a folder searched by stem.

    UserError (one line) when it is missing, or when an image has no depth file of its stem.
    """
    if not depth_path:
        raise UserError(f'this model needs a depth map beside each photograph; pass {option} '
                        'FILE (one image) or FOLDER (files named like the photographs: '
                        '<stem>.npy, .png or .tif)')
    depth_path = os.fspath(depth_path)
    if osp.isfile(depth_path):
        if len(images) != 1:
            raise UserError(f'{option} {depth_path} is one file but {len(images)} photographs '
                            f'were given; pass a folder of depth maps named like the photographs')
        return [depth_path]
    if not osp.isdir(depth_path):
        raise UserError(f'{option} {depth_path} does not exist; pass the depth file or the folder '
                        'holding <stem>.npy files')
    by_stem = {}
    for name in sorted(os.listdir(depth_path)):
        stem, extension = osp.splitext(name)
        if extension.lower() in DEPTH_FILE_EXTENSIONS and osp.isfile(osp.join(depth_path, name)):
            # .npy wins over a picture of the same stem (the photograph may sit in this folder).
            if stem not in by_stem or extension.lower() == '.npy':
                by_stem[stem] = osp.join(depth_path, name)
    matched, missing = [], []
    for image in images:
        stem = osp.splitext(osp.basename(image))[0]
        found = by_stem.get(stem)
        if found is None or osp.realpath(found) == osp.realpath(image):
            missing.append(osp.basename(image))
        matched.append(found)
    if missing:
        shown = ', '.join(missing[:3]) + (f' and {len(missing) - 3} more' if len(missing) > 3
                                          else '')
        raise UserError(f'no depth map in {depth_path} for {shown}; put <stem>.npy (or a 16-bit '
                        f'<stem>.png/.tif) there for every photograph')
    return matched
