"""Export a trained checkpoint to ONNX, checked against PyTorch before anything is written.

`export_checked` compares the exported model(s) with PyTorch on a deterministic synthetic picture
(drawn here, no demo data) and writes the landmark model and, when the checkpoint has one, its
framing model beside it (<stem>.framing.onnx, named in the first file's metadata): both or neither.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from cephalometric.errors import UserError
from cephalometric.outputs import check_not_inputs
from cephalometric.prediction.backends import OnnxRuntimeBackend
from cephalometric.prediction.onnx import export_onnx
from cephalometric.prediction.predictor import LandmarkPredictor
from cephalometric.prediction.results import StagedFiles, check_output_file

TOLERANCE_PX = 0.1


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


def framing_file(out: str) -> str:
    """Where export_onnx.py writes the framing model of `out`: <stem>.framing.onnx beside it."""
    return os.path.splitext(out)[0] + '.framing.onnx'


def export_checked(checkpoint: str, out: str) -> tuple:
    """Write `checkpoint` as ONNX to `out` if it agrees with PyTorch: (predictor, max px gap).

    A checkpoint with a framing model also gets `framing_file(out)`, named in `out`'s metadata;
    both are checked before either is written.
    """
    check_output_file(out, '--out')
    check_not_inputs([(out, '--out'), (framing_file(out), '--out (its framing model file)')],
                     [(checkpoint, 'the checkpoint')])
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
    with StagedFiles() as staged:   # both files or neither
        for path, content in ((out, data), (framing_file(out), framing)):
            if content is not None:
                with open(staged.reserve(path), 'wb') as stream:
                    stream.write(content)
    return reference, difference
