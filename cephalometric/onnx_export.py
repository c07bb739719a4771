"""Export a trained model to ONNX and check the export before it is written.

`export_onnx` traces `backends.heatmap_net` (backbone + neck + head) with a free batch size and
stores the inference settings in the model's metadata_props (one JSON value per key), so the .onnx
file alone is enough for inference (a checkpoint's framing model goes into a second file beside it,
which the first names). `export_checked` compares the exported model with PyTorch on a
deterministic synthetic picture (drawn here, no demo data) and writes the file(s) atomically only
when they agree. Imports numpy, OpenCV, the standard library and the package's `predictor`,
`atomic`, `results` (StagedFiles), `model_settings` and `errors`; torch and onnx inside the
functions.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Optional

import cv2
import numpy as np

from .errors import UserError
from .model_settings import settings_to_metadata

TOLERANCE_PX = 0.1


def export_onnx(net, settings: dict, path: Optional[str] = None,
                extra_metadata: Optional[dict] = None) -> bytes:
    """`net` ((N, 3, h, w) -> heatmaps) as ONNX bytes with `settings` (and `extra_metadata`,
    JSON-encoded) in its metadata."""
    try:
        import onnx
    except ImportError:
        raise UserError('exporting to ONNX needs the onnx package: '
                        'pip install -r requirements.txt') from None
    import copy

    import torch

    net = copy.deepcopy(net).cpu().eval()
    width, height = settings['input_size']
    buffer = io.BytesIO()
    # TorchScript exporter: needs only `onnx` (the dynamo one also needs onnxscript). Its
    # deprecation and tracer notes (HRNet's fixed upsampling sizes) are expected here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        channels = len(settings['mean'])   # 3, or 4 for an RGB-D model (photo + depth)
        torch.onnx.export(net, (torch.zeros(1, channels, height, width),), buffer, dynamo=False,
                          input_names=['input'], output_names=['heatmaps'], opset_version=17,
                          dynamic_axes={'input': {0: 'batch'}, 'heatmaps': {0: 'batch'}})
    proto = onnx.load_from_string(buffer.getvalue())
    import json
    metadata = settings_to_metadata(settings)
    metadata.update({key: json.dumps(value) for key, value in (extra_metadata or {}).items()})
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    if path is not None:
        _write(path, data)
    return data


def synthetic_face(width: int = 320, height: int = 384) -> np.ndarray:
    """A deterministic face-like RGB picture: a shaded head, eyes, nose and mouth on a backdrop."""
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    image = np.stack([60 + 80 * xs / width, 70 + 60 * ys / height,
                      90 + 40 * (xs + ys) / (width + height)], -1).astype(np.uint8)
    cx, cy = width // 2, height // 2
    cv2.ellipse(image, (cx, cy), (width // 3, height // 2 - 20), 0, 0, 360, (224, 180, 150), -1)
    for dx in (-1, 1):
        cv2.circle(image, (cx + dx * width // 8, cy - height // 10), 9, (40, 30, 30), -1)
    cv2.line(image, (cx, cy - 10), (cx + 12, cy + 35), (150, 100, 80), 4)
    cv2.ellipse(image, (cx, cy + height // 5), (width // 9, 12), 0, 0, 180, (150, 60, 60), 5)
    return image


def _write(path: str, data: bytes) -> None:
    from .atomic import atomic_path
    try:
        with atomic_path(path) as temporary, open(temporary, 'wb') as stream:
            stream.write(data)
    except OSError as error:
        raise UserError(f'cannot write {path}: {error.strerror or error}; choose another --out '
                        'or check the folder\'s permissions') from None


def check_writable(path: str) -> None:
    """Refuse an output file whose folder cannot be written, before minutes of work."""
    if os.path.isdir(path):
        raise UserError(f'--out {path} is a folder; give a file name ending in .onnx')
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f'--out {path} lies under {existing}, which is a file; choose another '
                        '--out')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f'cannot write to {existing}; choose another --out or check the '
                        'folder\'s permissions')


def framing_file(out: str) -> str:
    """Where export_onnx.py writes the framing model of `out`: <stem>.framing.onnx beside it."""
    return os.path.splitext(out)[0] + '.framing.onnx'


def export_checked(checkpoint: str, out: str) -> tuple:
    """Write `checkpoint` as ONNX to `out` if it agrees with PyTorch: (predictor, max px gap).

    A checkpoint with a framing model also gets `framing_file(out)`, named in `out`'s metadata;
    both are checked before either is written.
    """
    from .backends import OnnxRuntimeBackend
    from .predictor import LandmarkPredictor

    check_writable(out)
    reference = LandmarkPredictor(checkpoint, device='cpu', backend='pytorch')
    framing = None
    if reference.framing_network is not None:
        framing = export_onnx(reference.framing_network.net, reference.settings)
    data = export_onnx(reference.network.net, reference.settings, extra_metadata=None if
                       framing is None else {'framing_model': os.path.basename(framing_file(out))})
    exported = LandmarkPredictor.from_backend(
        reference.settings, OnnxRuntimeBackend(data, out, 'cpu'),
        None if framing is None else OnnxRuntimeBackend(framing, framing_file(out), 'cpu'))
    image = synthetic_face()
    # RGB-D: a smooth dome registered to the picture stands in for its depth map.
    ys, xs = np.mgrid[:image.shape[0], :image.shape[1]].astype(np.float32)
    depths = ([1.0 + ((xs / image.shape[1] - 0.5) ** 2 + (ys / image.shape[0] - 0.5) ** 2)]
              if reference.needs_depth else None)
    pairs = [(exported, reference)]
    if framing is not None:
        pairs.append((exported.framing_predictor(), reference.framing_predictor()))
    difference = max(float(np.abs(ours([image], depths=depths)[0].keypoints
                                  - theirs([image], depths=depths)[0].keypoints).max())
                     for ours, theirs in pairs)
    if not difference <= TOLERANCE_PX:
        raise UserError(f'the ONNX model disagrees with PyTorch by {difference:.3f} px on a test '
                        'image; not writing it')
    from .results import StagedFiles
    with StagedFiles() as staged:   # both files or neither
        for path, content in ((out, data), (framing_file(out), framing)):
            if content is not None:
                with open(staged.reserve(path), 'wb') as stream:
                    stream.write(content)
    return reference, difference
