"""Landmark prediction from a trained checkpoint: numpy RGB in, pixel coordinates out.

One small class in the style of rtmlib: `preprocess` (crop the face box and normalise, exactly as
MMPose's TopdownAffine + PoseDataPreprocessor do), `infer` (the network), `postprocess` (decode the
heatmaps with the model's own codec, DARK included, and map back to the original image). It needs only
the checkpoint: MMEngine stores the resolved config and the landmark names in its metadata.

Skipping MMPose's per-call pipeline (data samples, pseudo-collate, registry look-ups) and fusing
batch norm into the convolutions is what makes this path faster than `inference_topdown`; see
benchmark.py for the figures and tests/test_predictor.py for the agreement with stock MMPose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from .errors import UserError


@dataclass
class Prediction:
    """Landmarks of one image, in that image's pixels."""
    names: list
    keypoints: np.ndarray  # (K, 2) x, y
    scores: np.ndarray     # (K,) heatmap peak values; low means unsure
    bbox: tuple = field(default=())  # x, y, w, h of the face region used


def resolve_device(device: str = 'auto') -> str:
    import torch
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f'--device {device} but no CUDA GPU is visible; use --device cpu')
    return device


def _pipeline_step(cfg, name: str) -> dict:
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == name:
            return step
    return {}


class LandmarkPredictor:
    """HRNet top-down landmark model loaded from a train_cephalometric.py checkpoint.

    Args:
        checkpoint: path of a .pth written by training (e.g. work_dirs/cephalometric/best_MRE.pth).
        device: 'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.
        fuse_batch_norm: fold batch norm into the preceding convolutions (same results, faster).
    """

    def __init__(self, checkpoint: str, device: str = 'auto', fuse_batch_norm: bool = True):
        from . import mmcv_compat  # noqa: F401  (must precede mmpose)
        import torch
        from mmengine.config import Config
        from mmpose.registry import KEYPOINT_CODECS, MODELS
        from mmpose.utils import register_all_modules

        from .checkpoint import load_checkpoint_file

        data = load_checkpoint_file(checkpoint)
        meta = data.get('meta') or {}
        if 'cfg' not in meta or 'dataset_meta' not in meta:
            raise UserError(f'{checkpoint} has no config or landmark names in its metadata; pass a '
                            'checkpoint written by train_cephalometric.py')
        register_all_modules(init_default_scope=True)
        self.cfg = Config.fromstring(meta['cfg'], file_format='.py')
        id2name = meta['dataset_meta']['keypoint_id2name']
        self.names = [id2name[i] for i in range(len(id2name))]
        self.device = resolve_device(device)

        model = MODELS.build(self.cfg.model)
        model.load_state_dict(data['state_dict'])
        model.eval()
        if fuse_batch_norm:
            from mmcv.cnn import fuse_conv_bn
            model = fuse_conv_bn(model)
        self.model = model.to(self.device)
        self.codec = KEYPOINT_CODECS.build(self.cfg.model.head.decoder)
        self.input_size = tuple(int(v) for v in self.codec.input_size)  # (w, h)
        self.padding = float(_pipeline_step(self.cfg, 'GetBBoxCenterScale').get('padding', 1.25))
        preprocessor = self.cfg.model.data_preprocessor
        self.mean = np.asarray(preprocessor['mean'], np.float32).reshape(1, 1, 3)
        self.std = np.asarray(preprocessor['std'], np.float32).reshape(1, 1, 3)
        self._torch = torch

    # -- the three stages ------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray, bbox: Optional[Sequence[float]] = None):
        """RGB uint8 (H, W, 3) -> normalised (3, h, w) float32 input, box centre and scale.

        The box (x, y, w, h; default the whole image) is padded and widened to the input's aspect
        ratio exactly as GetBBoxCenterScale + TopdownAffine do, so results match MMPose.
        """
        from mmpose.structures.bbox import get_warp_matrix

        height, width = image.shape[:2]
        x, y, w, h = bbox if bbox is not None else (0, 0, width, height)
        center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
        scale = np.array([w, h], np.float32) * self.padding
        input_w, input_h = self.input_size
        aspect = input_w / input_h
        if scale[0] > scale[1] * aspect:
            scale = np.array([scale[0], scale[0] / aspect], np.float32)
        else:
            scale = np.array([scale[1] * aspect, scale[1]], np.float32)
        warp = get_warp_matrix(center, scale, 0, output_size=(input_w, input_h))
        crop = cv2.warpAffine(image, warp, (input_w, input_h), flags=cv2.INTER_LINEAR)
        normalised = (crop.astype(np.float32) - self.mean) / self.std
        return normalised.transpose(2, 0, 1), center, scale

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, h, w) float32 -> heatmaps (N, K, h/4, w/4) float32."""
        torch = self._torch
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            heatmaps = self.model._forward(inputs)
        return heatmaps.float().cpu().numpy()

    def postprocess(self, heatmaps: np.ndarray, centers, scales):
        """Heatmaps -> keypoints (N, K, 2) in original-image pixels and scores (N, K)."""
        input_size = np.asarray(self.input_size, np.float32)
        keypoints, scores = [], []
        for heatmap, center, scale in zip(heatmaps, centers, scales):
            points, point_scores = self.codec.decode(heatmap)  # (1, K, 2) in input pixels
            keypoints.append(points[0] / input_size * scale + center - 0.5 * scale)
            scores.append(point_scores[0])
        return np.stack(keypoints), np.stack(scores)

    # -- convenience -----------------------------------------------------------------------------
    def __call__(self, images: Sequence[np.ndarray], bboxes=None,
                 batch_size: int = 8) -> list[Prediction]:
        """Predict landmarks for RGB images; `bboxes` is None or one (x, y, w, h)/None per image."""
        bboxes = list(bboxes) if bboxes is not None else [None] * len(images)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = range(start, min(start + batch_size, len(images)))
            prepared = [self.preprocess(images[i], bboxes[i]) for i in chunk]
            heatmaps = self.infer(np.stack([p[0] for p in prepared]))
            keypoints, scores = self.postprocess(heatmaps, [p[1] for p in prepared],
                                                 [p[2] for p in prepared])
            for offset, i in enumerate(chunk):
                h, w = images[i].shape[:2]
                results.append(Prediction(self.names, keypoints[offset], scores[offset],
                                          tuple(bboxes[i]) if bboxes[i] is not None else
                                          (0, 0, w, h)))
        return results
