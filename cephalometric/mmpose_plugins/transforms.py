"""Training augmentation registered for MMPose pipelines: the photograph framed wider than a crop.

The training images are tight face crops, but a clinic's photograph shows the face smaller, anywhere
in the frame, on a plain wall or a busy room. `RandomZoomOut` pastes the crop into a larger canvas
(plain, gradient or cluttered background) at a random place and makes the canvas the face box, so
the framing model (the config's `framing_model`) learns to find a small face in a wide frame: the
coarse pass of `cephalometric.framing` depends on it. It runs after `LoadImage` (and `LoadDepth`)
and before `GetBBoxCenterScale`,
and it moves everything that is geometry (image, keypoints, box and any extra image channels such as
a depth map stored under `results['depth']`) together.

RGB-D training adds three steps around MMPose's own (`rgbd.use_inputs` inserts them): `LoadDepth`
(after LoadImage: the depth map beside the photograph becomes `results['depth']`, the 0..255
nearness channel of `depth.depth_channel`, 0 where missing), `WarpDepth` (after TopdownAffine: the
very same affine warp, so shift, scale and rotation move depth with the photo) and `StackDepth`
(just before PackPoseInputs, after the photometric changes, which therefore touch only the photo:
the photo and depth become one 4-channel float32 image, BGR + depth; the model's
`RGBDDataPreprocessor` swaps BGR to RGB and normalises all four channels).
"""
from __future__ import annotations

from typing import Optional

import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmpose.registry import TRANSFORMS
from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix

from cephalometric.data.depth import check_depth_size, clean_depth, depth_channel, read_depth_file

BACKGROUNDS = ('plain', 'gradient', 'clutter')


def random_background(height: int, width: int, channels: int, kind: str,
                      rng: np.random.Generator) -> np.ndarray:
    """A uint8 canvas: one colour, a two-colour gradient, or random shapes over a gradient."""
    if kind == 'plain':
        return np.broadcast_to(rng.integers(0, 256, channels, dtype=np.uint8),
                               (height, width, channels)).copy()
    start, end = rng.uniform(0, 255, (2, channels))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / max(width, 1) + np.sin(angle) * ys / max(height, 1))
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    canvas = start + (end - start) * ramp[..., None]
    if kind == 'clutter':
        canvas = np.ascontiguousarray(canvas.astype(np.uint8))
        for _ in range(int(rng.integers(8, 30))):
            colour = tuple(int(c) for c in rng.integers(0, 256, channels))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            size = int(rng.integers(4, max(5, min(height, width) // 3)))
            if rng.random() < 0.5:
                cv2.rectangle(canvas, (x, y), (x + size, y + int(rng.integers(4, 2 * size + 5))),
                              colour, -1)
            else:
                cv2.ellipse(canvas, (x, y), (size, int(rng.integers(2, size + 3))),
                            float(rng.uniform(0, 180)), 0, 360, colour, -1)
        noise = rng.normal(0, rng.uniform(2, 12), canvas.shape)
        return np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return np.clip(canvas, 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class RandomZoomOut(BaseTransform):
    """Paste the image into a canvas up to `max_ratio` times larger; the canvas becomes the box.

    Args:
        prob: probability of zooming out at all (the rest stay tight crops, as at test time
            after framing).
        max_ratio: largest canvas side / image side; the ratio is drawn uniformly in [1, max_ratio].
        backgrounds: canvas kinds to draw from ('plain', 'gradient', 'clutter').

    Reads and writes `img`, `img_shape`, `keypoints`, `bbox`, and `depth` when present: a
    (H, W) or (H, W, C) array that must stay aligned with the image (its canvas is 0, 'no depth').
    """

    def __init__(self, prob: float = 0.5, max_ratio: float = 3.0,
                 backgrounds: tuple = BACKGROUNDS, seed: Optional[int] = None):
        if not 0 <= prob <= 1 or max_ratio < 1:
            raise ValueError(f'RandomZoomOut needs 0 <= prob <= 1 and max_ratio >= 1, got '
                             f'{prob}, {max_ratio}')
        unknown = set(backgrounds) - set(BACKGROUNDS)
        if unknown or not backgrounds:
            raise ValueError(f'backgrounds must be some of {BACKGROUNDS}, got {backgrounds}')
        self.prob, self.max_ratio, self.backgrounds = prob, max_ratio, tuple(backgrounds)
        # None: draw from numpy's global generator, which MMEngine seeds per worker and rank.
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def _generator(self) -> np.random.Generator:
        return self.rng if self.rng is not None else np.random.default_rng(
            np.random.randint(0, 2 ** 31 - 1))

    def transform(self, results: dict) -> dict:
        rng = self._generator()
        if rng.random() >= self.prob:
            return results
        image = results['img']
        height, width = image.shape[:2]
        ratio = rng.uniform(1.0, self.max_ratio)
        canvas_h, canvas_w = int(round(height * ratio)), int(round(width * ratio))
        top = int(rng.integers(0, canvas_h - height + 1))
        left = int(rng.integers(0, canvas_w - width + 1))
        channels = image.shape[2] if image.ndim == 3 else 1
        kind = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        canvas = random_background(canvas_h, canvas_w, channels, kind, rng)
        canvas = canvas.reshape(canvas_h, canvas_w, *image.shape[2:])
        canvas[top:top + height, left:left + width] = image
        results['img'] = canvas
        results['img_shape'] = (canvas_h, canvas_w)
        if 'depth' in results and results['depth'] is not None:
            depth = results['depth']
            padded = np.zeros((canvas_h, canvas_w, *depth.shape[2:]), depth.dtype)
            padded[top:top + height, left:left + width] = depth
            results['depth'] = padded
        if results.get('keypoints') is not None:
            results['keypoints'] = results['keypoints'] + np.array([left, top], np.float32)
        results['bbox'] = np.array([[0, 0, canvas_w, canvas_h]], np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, max_ratio={self.max_ratio}, '
                f'backgrounds={self.backgrounds})')


@TRANSFORMS.register_module()
class LoadDepth(BaseTransform):
    """Read `results['depth_path']` (or take an in-memory `results['depth_map']`, any units, NaN
    missing) into `results['depth']`: (H, W) float32 nearness 0..255.

    Runs right after LoadImage, so every geometric step that follows sees photo and depth.
    """

    def transform(self, results: dict) -> dict:
        if results.get('depth_path'):
            depth = read_depth_file(results['depth_path'])
        else:
            depth = clean_depth(results.pop('depth_map'))
        check_depth_size(depth, results['img'].shape, results.get('depth_path') or 'depth map')
        results['depth'] = depth_channel(depth)
        return results


@TRANSFORMS.register_module()
class WarpDepth(BaseTransform):
    """Warp `results['depth']` exactly as the TopdownAffine before it warped the image.

    Uses what TopdownAffine left in `results` (input_center, input_scale, input_size and the box
    rotation), the same matrix function and the same interpolation; outside the photo is 0.
    """

    def __init__(self, use_udp: bool = False):
        self.use_udp = use_udp

    def transform(self, results: dict) -> dict:
        if results.get('depth') is None:
            return results
        width, height = (int(v) for v in results['input_size'])
        rotation = float(results['bbox_rotation'][0]) if 'bbox_rotation' in results else 0.0
        matrix_of = get_udp_warp_matrix if self.use_udp else get_warp_matrix
        matrix = matrix_of(np.asarray(results['input_center'], np.float32),
                           np.asarray(results['input_scale'], np.float32), rotation,
                           output_size=(width, height))
        results['depth'] = cv2.warpAffine(results['depth'], matrix, (width, height),
                                          flags=cv2.INTER_LINEAR)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(use_udp={self.use_udp})'


@TRANSFORMS.register_module()
class StackDepth(BaseTransform):
    """Photo (H, W, 3) + depth (H, W) -> one (H, W, 4) float32 image: B, G, R, depth."""

    def transform(self, results: dict) -> dict:
        image, depth = results['img'], results.pop('depth')
        if depth.shape[:2] != image.shape[:2]:
            raise ValueError(f'StackDepth: depth {depth.shape[:2]} and image {image.shape[:2]} '
                             'differ; put WarpDepth right after TopdownAffine')
        results['img'] = np.concatenate(
            [image.astype(np.float32), depth.astype(np.float32)[..., None]], axis=2)
        return results


@TRANSFORMS.register_module()
class LandmarkPatch(BaseTransform):
    """Make the box a small patch around one landmark, for the refinement model.

    Runs after GetBBoxCenterScale. One visible landmark is drawn at random; the box becomes a
    square of side `patch` x the padded face box's longer side, centred on that landmark plus a
    Gaussian offset of `jitter` x the side per axis (at most `max_offset` x half the side). At
    inference the patch is centred on the landmark model's estimate instead: the offsets teach
    the model to find the landmark from where that estimate puts it (its measured error sets
    `jitter`; see `training.config.refine_config`). Every landmark inside the patch is a target.

    Reads `bbox_scale` and `keypoints`, `keypoints_visible`; writes `bbox_center`, `bbox_scale`
    and `patch_landmark` (the landmark drawn).
    """

    def __init__(self, patch: float, jitter: float, max_offset: float = 0.8,
                 seed: Optional[int] = None):
        if not 0 < patch <= 1 or not 0 <= jitter or not 0 <= max_offset <= 1:
            raise ValueError(f'LandmarkPatch needs 0 < patch <= 1, jitter >= 0 and 0 <= '
                             f'max_offset <= 1, got {patch}, {jitter}, {max_offset}')
        self.patch, self.jitter, self.max_offset = patch, jitter, max_offset
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def transform(self, results: dict) -> dict:
        rng = self.rng if self.rng is not None else np.random.default_rng(
            np.random.randint(0, 2 ** 31 - 1))
        keypoints = np.asarray(results['keypoints'], np.float32).reshape(-1, 2)
        visible = np.asarray(results.get('keypoints_visible', np.ones(len(keypoints))))
        candidates = np.flatnonzero((visible.reshape(-1) > 0)
                                    & np.isfinite(keypoints).all(axis=1))
        if not len(candidates):
            return results   # nothing to centre on: the whole face box, as the landmark model
        landmark = int(rng.choice(candidates))
        side = self.patch * float(np.max(results['bbox_scale']))
        limit = self.max_offset * side / 2
        offset = np.clip(rng.normal(0.0, self.jitter * side, 2), -limit, limit)
        results['bbox_center'] = (keypoints[landmark] + offset).astype(np.float32)[None]
        results['bbox_scale'] = np.array([[side, side]], np.float32)
        results['patch_landmark'] = landmark
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(patch={self.patch}, jitter={self.jitter}, '
                f'max_offset={self.max_offset})')
