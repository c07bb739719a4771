"""Finding and reading the photographs a user points a tool at.

`find_images` turns an image path, a folder or a glob pattern into a sorted list of files;
`read_rgb` decodes one into an RGB uint8 array, with one-line errors for anything that is not a
readable picture.
"""
from __future__ import annotations

import contextlib
import glob
import os
import os.path as osp
import sys
import threading

import cv2
import numpy as np

from cephalometric.errors import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def find_images(pattern: str) -> list[str]:
    """The image files named by `pattern`: a file, a folder (its images, sorted) or a glob."""
    pattern = os.fspath(pattern)
    if osp.isdir(pattern):
        paths = [osp.join(pattern, name) for name in sorted(os.listdir(pattern))
                 if name.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(osp.join(pattern, name))]
        if not paths:
            raise UserError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {pattern}')
        return paths
    if osp.isfile(pattern):
        return [pattern]
    paths = sorted(p for p in glob.glob(pattern) if osp.isfile(p))
    if not paths:
        raise UserError(f'no image found at {pattern}; give an image file, a folder or a glob '
                        'such as "photos/*.jpg"')
    return paths


# File descriptor 2 belongs to the whole process: threads that read images at the same time (the
# review server's background prediction and its requests) share one redirection, made by the
# first of them and undone by the last. Always descriptor 2, where C libraries write: whatever
# `sys.stderr.fileno()` is at the first thread's start (under pytest, a capture file that is
# closed when its test ends) may be gone when the last thread restores it.
_STDERR_FD = 2
_SILENCE_LOCK = threading.Lock()
_silence = {'depth': 0, 'saved': None}


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send what C libraries print to file descriptor 2 (libpng's "Read Error", OpenCV's
    warnings) to /dev/null for the duration, so a bad image ends in our one line only."""
    fd = _STDERR_FD
    with _SILENCE_LOCK:
        if _silence['depth'] == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            try:
                saved = os.dup(fd)
            except OSError:   # no descriptor 2 at all: nothing to silence
                saved = None
            if saved is not None:
                null = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(null, fd)
                finally:
                    os.close(null)
            _silence['saved'] = saved
        _silence['depth'] += 1
    try:
        yield
    finally:
        with _SILENCE_LOCK:
            _silence['depth'] -= 1
            if _silence['depth'] == 0:
                saved, _silence['saved'] = _silence['saved'], None
                if saved is not None:
                    os.dup2(saved, fd)
                    os.close(saved)


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); UserError for anything unreadable."""
    try:
        with _native_stderr_silenced():
            image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    except cv2.error:   # e.g. a picture larger than OpenCV's pixel limit
        image = None
    if image is None or image.size == 0:
        raise UserError(f'cannot read image {path}; is it a complete PNG/JPEG/BMP/TIFF/WebP file?')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
