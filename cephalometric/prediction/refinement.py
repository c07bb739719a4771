"""The refinement stage: every landmark re-located on a small patch of the original image.

The landmark model sees the whole face at its input size (128-256 px), which on a 600 px
cephalogram is 4-5 image pixels per input pixel. The refinement model (the checkpoint's
`refine_state_dict`, trained by `training.config.refine_config`) sees a patch around each estimate,
`settings['refinement']['patch']` of the padded face box, at its own input size (64 px): several
times finer. One class in the style of rtmlib: `preprocess` (one patch per landmark, cut and
normalised as the landmark model's input is), `infer` (the network), `postprocess` (the landmark's
own heatmap channel decoded like the landmark model's, mapped back to the image).

A refined position replaces the estimate only where the patch shows that landmark: its heatmap
peak reaches REFINE_MIN_SCORE and lies within REFINE_MAX_SHIFT of the patch centre (training
jitters the centre by at most 0.4 of the side, so a peak beyond is another structure at the
border). Scores and spreads stay the landmark model's. The refinement model's own heatmap also
says how sure the point is (`uncertainty`): at its finer resolution the spread of its peak, widened
where the peak is low, tracks the real error where the landmark model's coarse heatmap cannot (its
errors are a fraction of one heatmap pixel, so every peak there looks alike).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from cephalometric.prediction.heatmaps import (
    check_heatmaps,
    decode_heatmaps,
    heatmap_spread,
    warp_matrix,
)

REFINE_MIN_SCORE = 0.05   # heatmap peak below which the patch is taken to show no landmark
REFINE_MAX_SHIFT = 0.45   # per axis, share of the patch side the refined position may move
PATCHES_PER_BATCH = 64


class Refiner:
    """The refinement network with its settings; `prepare(image, depth, matrix, size)` cuts and
    normalises one input exactly as the landmark model's preprocessing does."""

    def __init__(self, network, refinement: dict, prepare: Callable, source: str = 'the model'):
        self.network, self.refinement, self.prepare = network, refinement, prepare
        self.input_size = tuple(refinement['input_size'])
        self.source = source

    def patch_side(self, scale) -> float:
        """Patch side in image pixels for a landmark model box of `scale` (w, h, padded)."""
        return float(self.refinement['patch']) * float(np.max(scale))

    def preprocess(self, image: np.ndarray, keypoints: np.ndarray, scale,
                   depth: Optional[np.ndarray] = None):
        """(K', C, s, s) patches around the finite keypoints, their landmark indices and side."""
        side = self.patch_side(scale)
        indices = np.flatnonzero(np.isfinite(keypoints).all(axis=1))
        patches = [self.prepare(image, depth, warp_matrix(keypoints[k].astype(np.float32),
                                                          np.array([side, side], np.float32),
                                                          self.input_size), self.input_size)
                   for k in indices]
        return patches, indices, side

    def infer(self, batch: np.ndarray, count: int) -> np.ndarray:
        return check_heatmaps(self.network(batch), len(batch), count, self.input_size,
                              self.source)

    def postprocess(self, heatmaps: np.ndarray, landmarks: np.ndarray, centres: np.ndarray,
                    sides: np.ndarray):
        """Each patch's own landmark channel -> (positions in image pixels (M, 2), peak scores
        (M,), uncertainty (M,)); patch m was cut around centres[m], sides[m] pixels wide, for
        landmarks[m]. The uncertainty is the channel's `heatmap_spread` in image pixels divided
        by the square root of its peak height (at least REFINE_MIN_SCORE): a low, flat peak is
        less sure than a high one of the same width."""
        decoder = self.refinement['decoder']
        own = heatmaps[np.arange(len(landmarks)), landmarks][:, None]
        points, scores = decode_heatmaps(own, self.input_size, decoder['unbiased'],
                                         decoder['blur_kernel_size'])
        size = np.asarray(self.input_size, np.float32)
        spread = heatmap_spread(own)[:, 0] * sides / own.shape[-1]
        peak = np.nan_to_num(own.reshape(len(own), -1).max(axis=1), nan=0.0)
        uncertainty = spread / np.sqrt(np.maximum(peak, REFINE_MIN_SCORE))
        return (centres + (points[:, 0] / size - 0.5) * sides[:, None], scores[:, 0],
                uncertainty)

    def __call__(self, images: Sequence[np.ndarray], keypoints: Sequence[np.ndarray], scales,
                 depths=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(the refined (K, 2) keypoints of each image (a copy; kept where not refined), each
        landmark's uncertainty (K,) in image pixels (`postprocess`; NaN without a position))."""
        flat = []   # (image index, landmark index, patch side, patch), every image's patches
        for i, image in enumerate(images):
            patches, indices, side = self.preprocess(
                image, np.asarray(keypoints[i], np.float32), scales[i],
                None if depths is None else depths[i])
            flat += [(i, k, side, patch) for k, patch in zip(indices, patches)]
        refined = [np.array(k, np.float32, copy=True) for k in keypoints]
        count = len(np.asarray(keypoints[0])) if len(keypoints) else 0
        uncertainty = [np.full(count, np.nan) for _ in keypoints]
        for start in range(0, len(flat), PATCHES_PER_BATCH):
            chunk = flat[start:start + PATCHES_PER_BATCH]
            heatmaps = self.infer(np.stack([patch for *_, patch in chunk]), count)
            landmarks = np.array([k for _, k, _, _ in chunk])
            centres = np.array([refined[i][k] for i, k, _, _ in chunk], np.float32)
            sides = np.array([side for _, _, side, _ in chunk], np.float32)
            points, scores, unsure = self.postprocess(heatmaps, landmarks, centres, sides)
            for j, (i, k, _, _) in enumerate(chunk):   # said of every patch, moved or not
                uncertainty[i][k] = unsure[j]
            shifts = np.abs(points - centres).max(axis=1)
            accepted = ((scores >= REFINE_MIN_SCORE) & (shifts <= REFINE_MAX_SHIFT * sides)
                        & np.isfinite(points).all(axis=1))
            for j in np.flatnonzero(accepted):
                i, k = chunk[j][0], chunk[j][1]
                refined[i][k] = points[j]
        return refined, uncertainty
