"""The options several scripts share: one name, one default, one help text and one check each.

`DEFAULTS` is the table (as Ultralytics keeps one table of defaults behind its CLI); a script
adds the shared options it takes with `add_options(parser, 'checkpoint', 'device', ...)` and,
after parsing, `check_options(args)` checks every shared option the parser has, so `--device
cuda:1` or `--score-threshold 2` means, and is refused, the same way in every tool.
"""
from __future__ import annotations

import argparse
import math
import re
from typing import Any, Optional

from cephalometric.errors import UserError

BACKENDS = ('auto', 'pytorch', 'onnxruntime')
# What a face region can be besides a box: found automatically, or the whole image.
FRAMING_MODES = ('auto', 'full')
DEVICE_PATTERN = re.compile(r'auto|cpu|cuda(:\d+)?')

DEFAULTS = dict(
    checkpoint=None,        # best_MRE.pth from training, or a .onnx from export_onnx.py
    device='auto',          # auto: CUDA when present
    backend='auto',         # auto: pytorch for a .pth, onnxruntime for a .onnx
    batch_size=8,           # images per forward pass
    score_threshold=0.3,    # landmarks scoring below this are marked for review
    bbox='auto',            # face region
    depth_path=None,        # RGB-D models: depth maps
    mm_per_pixel=None,      # pixel spacing, for distances in mm
    no_refine=False,        # True: the landmark model's positions, without the refinement model
)

_HELP = dict(
    checkpoint='best_MRE.pth written by train_cephalometric.py, or a .onnx written by '
               'export_onnx.py',
    device='auto (CUDA when present), cpu, cuda or cuda:N (default %(default)s)',
    backend='auto: onnxruntime for a .onnx from export_onnx.py (fastest on a CPU), pytorch for '
            'a .pth (default %(default)s)',
    batch_size='images per forward pass (default %(default)s)',
    score_threshold='landmarks scoring below this (0..1) are marked for review, and no skeletal '
                    'class is given when S, N, A or B is among them (default %(default)s)',
    bbox='face region: auto (found in the photograph, either facing direction), full (the whole '
         'image) or x,y,w,h in pixels (default %(default)s)',
    depth_path='RGB-D models: the depth map of the photograph (.npy, or 16-bit PNG/TIFF with 0 = '
               'no reading), or a folder of them named like the photographs (<stem>.npy)',
    mm_per_pixel='pixel spacing, to also give distances in mm',
    no_refine='skip the refinement model (checkpoints trained with one re-locate every landmark on '
              'a patch around it): the landmark model\'s own positions',
)
_KWARGS = dict(
    checkpoint=dict(metavar='FILE'),
    backend=dict(choices=BACKENDS),
    batch_size=dict(type=int),
    score_threshold=dict(type=float),
    depth_path=dict(metavar='FILE|FOLDER'),
    mm_per_pixel=dict(type=float, metavar='X'),
    no_refine=dict(action='store_true'),
)


def add_options(parser: argparse.ArgumentParser, *names: str, required: tuple = (),
                defaults: Optional[dict] = None, help: Optional[dict] = None) -> None:
    """Add the shared options `names` (keys of DEFAULTS) to `parser`.

    required: names the script cannot do without; defaults / help: a script's own default or
    help text for an option (e.g. evaluate.py frames the whole image by default).
    """
    for name in names:
        kwargs = dict(_KWARGS.get(name, {}), help=(help or {}).get(name, _HELP[name]))
        if name in required:
            kwargs['required'] = True
        else:
            kwargs['default'] = (defaults or {}).get(name, DEFAULTS[name])
        parser.add_argument('--' + name.replace('_', '-'), **kwargs)


def check_device(device: Any) -> str:
    """`device` if it is auto, cpu, cuda or cuda:N, else one-line UserError."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise UserError(f'--device must be auto, cpu, cuda or cuda:N, got {device!r}')
    return device


def check_score_threshold(value: float) -> float:
    if not (0 <= value <= 1):
        raise UserError(f'--score-threshold must be between 0 and 1, got {value}')
    return value


def check_batch_size(value: int) -> int:
    if value < 1:
        raise UserError(f'--batch-size must be at least 1, got {value}')
    return value


def check_mm_per_pixel(value: Optional[float]) -> Optional[float]:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f'--mm-per-pixel must be a positive number, got {value}')
    return value


def parse_bbox(text: str):
    """'auto', 'full' or an (x, y, w, h) tuple of finite numbers with positive width and height."""
    if text in FRAMING_MODES:
        return text
    try:
        values = [float(v) for v in str(text).split(',')]
    except ValueError:
        values = []
    if len(values) != 4 or not all(map(math.isfinite, values)) or values[2] <= 0 \
            or values[3] <= 0:
        raise UserError(f'--bbox must be x,y,w,h (finite numbers, positive width and height) or '
                        f'one of {", ".join(FRAMING_MODES)}, got {text!r}')
    return tuple(values)


_CHECKS = dict(device=check_device, score_threshold=check_score_threshold,
               batch_size=check_batch_size, mm_per_pixel=check_mm_per_pixel, bbox=parse_bbox)


def check_options(args: argparse.Namespace) -> argparse.Namespace:
    """Check every shared option `args` has (one-line UserError); --bbox becomes its parsed form."""
    for name, check in _CHECKS.items():
        if getattr(args, name, None) is not None:   # None: not given, a script's own default
            setattr(args, name, check(getattr(args, name)))
    return args
