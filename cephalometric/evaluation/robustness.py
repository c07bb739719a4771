"""Photographs as a clinic takes them, made from test crops, to measure framing robustness.

Each test crop becomes variants with known landmarks: the same face pasted at a random place into a
canvas 1.5x, 2x or 3x its size (a plain wall or a cluttered room: low-frequency colour blotches and
random strokes, deliberately unlike the training augmentation's shapes), and the mirrored photograph
(the patient's other side). `evaluate.py --robustness` predicts every variant with automatic framing
and with the whole image as the face box (`--bbox full`, the behaviour before framing) and reports
the MRE of each against the crop's.
"""
from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

# (name, canvas side / crop side, background); 'crop' and 'mirrored' keep the crop's size.
VARIANTS = (('crop', 1.0, None), ('1.5x plain', 1.5, 'plain'), ('2x plain', 2.0, 'plain'),
            ('3x plain', 3.0, 'plain'), ('1.5x cluttered', 1.5, 'cluttered'),
            ('2x cluttered', 2.0, 'cluttered'), ('3x cluttered', 3.0, 'cluttered'),
            ('mirrored', 1.0, None))


def cluttered_canvas(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Blotchy colour regions at several scales with strokes across them: a busy room."""
    canvas = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((3, 0.5), (9, 0.3), (27, 0.2)):
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        canvas += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas = np.ascontiguousarray(np.clip(canvas, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(10, 25))):
        p, q = rng.integers(0, [width, height], (2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(canvas, tuple(map(int, p)), tuple(map(int, q)), colour,
                 int(rng.integers(1, 6)), cv2.LINE_AA)
    return canvas


def make_variant(image: np.ndarray, keypoints: np.ndarray, ratio: float, background,
                 rng: np.random.Generator, mirrored: bool = False):
    """(photo, landmarks) for one variant of an RGB crop and its (K, 2) landmarks."""
    keypoints = np.asarray(keypoints, np.float32)
    if mirrored:
        flipped = keypoints.copy()
        flipped[:, 0] = (image.shape[1] - 1) - flipped[:, 0]
        return np.ascontiguousarray(image[:, ::-1]), flipped
    if background is None:
        return image, keypoints
    height, width = image.shape[:2]
    canvas_h, canvas_w = int(round(height * ratio)), int(round(width * ratio))
    if background == 'plain':
        canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
        canvas[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    else:
        canvas = cluttered_canvas(canvas_h, canvas_w, rng)
    top = int(rng.integers(0, canvas_h - height + 1))
    left = int(rng.integers(0, canvas_w - width + 1))
    canvas[top:top + height, left:left + width] = image
    return canvas, keypoints + np.array([left, top], np.float32)


def variants(image: np.ndarray, keypoints: np.ndarray, seed: int) -> Iterator[tuple]:
    """(variant name, photo, landmarks) for every entry of VARIANTS, reproducible per seed."""
    rng = np.random.default_rng(seed)
    for name, ratio, background in VARIANTS:
        photo, truth = make_variant(image, keypoints, ratio, background, rng,
                                    mirrored=name == 'mirrored')
        yield name, photo, truth


def robustness_errors(images, truths, predict_modes: dict, seed: int = 0) -> dict:
    """{mode: {variant: per-image MRE array (px)}} for every image, variant and predict mode.

    `predict_modes` maps a mode name ('auto', 'full') to a callable photo -> (K, 2) landmarks.
    Landmarks with a non-finite truth are left out of an image's mean.
    """
    errors = {mode: {name: [] for name, _, _ in VARIANTS} for mode in predict_modes}
    for index, (image, truth) in enumerate(zip(images, truths)):
        for name, photo, photo_truth in variants(image, truth, seed + index):
            for mode, predict in predict_modes.items():
                distances = np.linalg.norm(predict(photo) - photo_truth, axis=-1)
                errors[mode][name].append(float(np.nanmean(distances)))
    return {mode: {name: np.asarray(values) for name, values in table.items()}
            for mode, table in errors.items()}
