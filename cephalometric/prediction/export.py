"""Export a trained checkpoint to ONNX, checked against PyTorch before anything is written.

`export_checked` compares the exported model(s) with PyTorch on a deterministic synthetic picture
(drawn here, no demo data) and writes the landmark model and, when the checkpoint has them, its
framing model (<stem>.framing.onnx) and refinement model (<stem>.refine.onnx) beside it, named in
the first file's metadata: all or none.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from cephalometric.errors import UserError
from cephalometric.model.settings import refine_settings
from cephalometric.outputs import check_not_inputs
from cephalometric.prediction.backends import OnnxRuntimeBackend
from cephalometric.prediction.onnx import companion_file, export_onnx
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
    return companion_file(out, 'framing_model')


def export_checked(checkpoint: str, out: str) -> tuple:
    """Write `checkpoint` as ONNX to `out` if it agrees with PyTorch: (predictor, max px gap).

    A checkpoint with a framing or refinement model also gets its `companion_file`, named in
    `out`'s metadata; all are checked before any is written.
    """
    check_output_file(out, '--out')
    check_not_inputs([(out, '--out')] + [(companion_file(out, key), f'--out (its {key} file)')
                                         for key in ('framing_model', 'refine_model')],
                     [(checkpoint, 'the checkpoint')])
    reference = LandmarkPredictor(checkpoint, device='cpu', backend='pytorch')
    companions = {}   # metadata key -> ONNX bytes
    if reference.framing_network is not None:
        companions['framing_model'] = export_onnx(reference.framing_network.net,
                                                  reference.settings)
    if reference.refine_network is not None:
        companions['refine_model'] = export_onnx(reference.refine_network.net,
                                                 refine_settings(reference.settings))
    data = export_onnx(reference.network.net, reference.settings, extra_metadata={
        key: os.path.basename(companion_file(out, key)) for key in companions} or None)

    def backend(key):
        return None if key not in companions else OnnxRuntimeBackend(
            companions[key], companion_file(out, key), 'cpu')
    exported = LandmarkPredictor.from_backend(
        reference.settings, OnnxRuntimeBackend(data, out, 'cpu'), backend('framing_model'),
        backend('refine_model'))
    image = synthetic_face()
    # RGB-D: a smooth dome registered to the picture stands in for its depth map.
    ys, xs = np.mgrid[:image.shape[0], :image.shape[1]].astype(np.float32)
    depths = ([1.0 + ((xs / image.shape[1] - 0.5) ** 2 + (ys / image.shape[0] - 0.5) ** 2)]
              if reference.needs_depth else None)
    # Each network on its own (the landmark model unrefined, then refined), so an error in one
    # cannot hide behind another's fallback.
    pairs = [(exported.coarse_predictor(), reference.coarse_predictor())]
    if 'refine_model' in companions:
        pairs.append((exported, reference))
    if 'framing_model' in companions:
        pairs.append((exported.framing_predictor(), reference.framing_predictor()))
    difference = max(float(np.abs(ours([image], depths=depths)[0].keypoints
                                  - theirs([image], depths=depths)[0].keypoints).max())
                     for ours, theirs in pairs)
    if 'refine_model' in companions:
        difference = max(difference, _refine_difference(exported, reference, image, depths))
    if not difference <= TOLERANCE_PX:
        raise UserError(f'the ONNX model disagrees with PyTorch by {difference:.3f} px on a test '
                        'image; not writing it')
    with StagedFiles() as staged:   # all files or none
        for path, content in [(out, data)] + [(companion_file(out, key), content)
                                              for key, content in companions.items()]:
            with open(staged.reserve(path), 'wb') as stream:
                stream.write(content)
    return reference, difference


def _refine_difference(exported, reference, image, depths) -> float:
    """Largest gap of the two refinement networks' heatmap peaks on the same patches (in patch
    input pixels), independent of whether either would be accepted."""
    ours, theirs = exported.refiner, reference.refiner
    height, width = image.shape[:2]
    spread = np.linspace(0.25, 0.75, len(reference.names), dtype=np.float32)
    keypoints = np.stack([spread * width, spread[::-1] * height], 1)   # across the face
    scale = reference.box_scale((0, 0, width, height))
    patches, indices, side = ours.preprocess(image, keypoints, scale,
                                             None if depths is None else depths[0])
    batch = np.stack(patches)
    centres, sides = keypoints[indices], np.full(len(indices), side, np.float32)
    points = [refiner.postprocess(refiner.infer(batch, len(reference.names)), indices, centres,
                                  sides)[0] for refiner in (ours, theirs)]
    return float(np.abs(points[0] - points[1]).max())
