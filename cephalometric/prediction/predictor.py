"""Landmark prediction from a trained model: numpy RGB in, pixel coordinates out.

One small class in the style of rtmlib: `preprocess` (crop the face box and normalise, exactly as
MMPose's GetBBoxCenterScale + TopdownAffine + PoseDataPreprocessor do), `infer` (the network, one
of `backends`), `postprocess` (MSRAHeatmap decoding from `heatmaps`, mapped back to the original
image). Results agree with MMPose's `inference_topdown` to well under 0.1 px (tests).
A .pth runs on 'pytorch' by default, a .onnx from export_onnx.py on 'onnxruntime' (needs no torch
or MMPose); 'onnxruntime' with a .pth exports in memory first. `predict` adds the face region:
found automatically (`framing`, with the checkpoint's framing model when it has one, which an
exported .onnx keeps in <stem>.framing.onnx beside it), the whole image, or given. A checkpoint
with a refinement model (<stem>.refine.onnx beside an export) then re-locates every landmark on a
patch around it (`refinement.Refiner`), unless `refine=False`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from cephalometric.cli import BACKENDS, FRAMING_MODES  # noqa: F401  (the choices of predict)
from cephalometric.data.depth import check_depth_size, depth_channel
from cephalometric.errors import UserError
from cephalometric.model.settings import refine_settings, settings_from_metadata
from cephalometric.model.shape_prior import ShapePrior
from cephalometric.prediction.backends import (  # noqa: F401
    OnnxRuntimeBackend,
    PyTorchBackend,
    check_device,
    resolve_device,
)
from cephalometric.prediction.heatmaps import (
    check_heatmaps,
    decode_heatmaps,
    error_signal,
    heatmap_spread,
    warp_matrix,
)
from cephalometric.prediction.onnx import companion_model_path, export_onnx
from cephalometric.prediction.refinement import Refiner


@dataclass
class Prediction:
    """Landmarks of one image, in that image's pixels."""
    names: list
    keypoints: np.ndarray  # (K, 2) x, y
    scores: np.ndarray     # (K,) heatmap peak values; low means unsure
    bbox: tuple = field(default=())  # x, y, w, h of the face region used
    framing: Optional[dict] = None   # how that region was found (`framing.Framing.to_dict`)
    spread: Optional[np.ndarray] = None          # (K,) heatmap spread, image pixels
    # (K,) the refinement model's uncertainty (`refinement.Refiner.postprocess`), image pixels;
    # None without that model.
    refine_uncertainty: Optional[np.ndarray] = None
    # (K,) calibrated expected error and 90% radius, image pixels; None: the checkpoint has no
    # error calibration (trained before it existed), so nothing is said about its errors.
    expected_error: Optional[np.ndarray] = None
    radius90: Optional[np.ndarray] = None
    # {measurement: width factor of its 90% interval} from the error calibration
    # (`uncertainty.scaled_spread`); None: the checkpoint has none.
    interval_scale: Optional[dict] = None


def check_bbox(bbox, width: int, height: int) -> tuple:
    """A face box (x, y, w, h) that is finite, positive and overlaps the image, else UserError."""
    values = tuple(float(v) for v in bbox)
    if len(values) != 4 or not all(map(math.isfinite, values)) or min(values[2:]) <= 0:
        raise UserError(f'--bbox must be four finite numbers x,y,w,h with positive width and '
                        f'height, got {bbox!r}')
    x, y, w, h = values
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise UserError(f'--bbox {x:g},{y:g},{w:g},{h:g} lies outside the {width}x{height} image; '
                        'give the face region in that image\'s pixels')
    return values


NO_POSITIONS_REASON = ('no face found (the model gave no landmark position: its heatmaps hold '
                       'NaN or infinity); check the model, or re-train it')


class _NoPositions(Exception):
    """The face finder gave no landmark a position (NaN or infinite heatmaps)."""


class _PositionsRequired:
    """The face finder, stopping the framing search when a prediction has no landmark position
    at all (a face box cannot be derived from none)."""

    def __init__(self, predictor):
        self.predictor = predictor

    def __call__(self, *args, **kwargs):
        predictions = self.predictor(*args, **kwargs)
        if any(not np.isfinite(p.keypoints).all(axis=1).any() for p in predictions):
            raise _NoPositions()
        return predictions

    def __getattr__(self, name):
        return getattr(self.predictor, name)


class LandmarkPredictor:
    """HRNet top-down landmark model from a training checkpoint (.pth) or an exported .onnx.

    device: 'auto' (CUDA when present), 'cpu' or 'cuda[:N]'; backend: one of BACKENDS;
    threads: CPU threads for the network (pytorch: torch's process-wide count).
    """

    def __init__(self, checkpoint: str, device: str = 'auto', fuse_batch_norm: bool = True,
                 backend: str = 'auto', threads: Optional[int] = None, refine: bool = True):
        if backend not in BACKENDS:
            raise UserError(f'backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
        check_device(device)
        checkpoint = os.fspath(checkpoint)
        self.source = checkpoint
        is_onnx = checkpoint.lower().endswith('.onnx')
        backend = ('onnxruntime' if is_onnx else 'pytorch') if backend == 'auto' else backend
        if is_onnx and backend != 'onnxruntime':
            raise UserError(f'{checkpoint} is an ONNX model: use --backend onnxruntime')
        # framing_network: the framing model (faces in wide photographs), when the checkpoint
        # has one; None: the landmark network finds faces too.
        # refine_network: the refinement model, when the checkpoint has one and `refine`.
        self.framing_network = self.refine_network = None
        if is_onnx:
            if not os.path.isfile(checkpoint):
                raise UserError(f'ONNX model not found: {checkpoint}')
            self.network = OnnxRuntimeBackend(checkpoint, checkpoint, device, threads)
            metadata = self.network.metadata()
            self.settings = settings_from_metadata(metadata, checkpoint)
            self.network.check_fits(self.settings, checkpoint)
            for key, settings in (('framing_model', self.settings),
                                  ('refine_model', refine_settings(self.settings))):
                path = companion_model_path(metadata, key, checkpoint)
                if path and settings is None:
                    raise UserError(f'{checkpoint} names a refinement model but has no '
                                    'refinement settings; export it again with export_onnx.py')
                if path and (key == 'framing_model' or refine):
                    companion = OnnxRuntimeBackend(path, path, device, threads)
                    companion.check_fits(settings, path)
                    setattr(self, key.replace('_model', '_network'), companion)
        else:
            from cephalometric.model.checkpoint import load_published
            published = load_published(checkpoint)
            model_config, self.settings = published.model_config, published.settings
            def network(weights, settings):   # one architecture, each network its own weights
                if weights is None:
                    return None
                net = PyTorchBackend(model_config, weights, checkpoint,
                                     'cpu' if backend == 'onnxruntime' else device,
                                     fuse_batch_norm, threads)
                if backend != 'onnxruntime':
                    return net
                return OnnxRuntimeBackend(export_onnx(net.net, settings), checkpoint,
                                          device, threads)
            self.network = network(published.state_dict, self.settings)
            self.framing_network = network(published.framing_state_dict, self.settings)
            if refine:
                self.refine_network = network(published.refine_state_dict,
                                              refine_settings(self.settings))
        self._configure()

    @classmethod
    def from_backend(cls, settings: dict, network, framing_network=None,
                     refine_network=None) -> 'LandmarkPredictor':
        """A predictor for checked `settings` and ready backends (e.g. in-memory exports)."""
        predictor = cls.__new__(cls)
        predictor.settings, predictor.network = settings, network
        predictor.framing_network, predictor.refine_network = framing_network, refine_network
        predictor.source = 'the model'
        predictor._configure()
        return predictor

    def export_onnx(self, path: Optional[str] = None) -> bytes:
        """The landmark network as ONNX with the settings in its metadata
        (`prediction.onnx.export_onnx`; export_onnx.py also writes the framing model beside it)."""
        if not hasattr(self.network, 'net'):
            raise UserError('export_onnx needs a PyTorch checkpoint (.pth)')
        return export_onnx(self.network.net, self.settings, path)

    def framing_predictor(self) -> 'LandmarkPredictor':
        """The predictor that finds faces: the framing model's, or this one without it."""
        if self.framing_network is None:
            return self
        if getattr(self, '_framing_predictor', None) is None:
            # The error calibration was measured on the landmark model: the framing model's
            # passes get no expected errors (nothing reads them, and each costs a shape solve).
            settings = {key: value for key, value in self.settings.items()
                        if key != 'error_calibration'}
            self._framing_predictor = LandmarkPredictor.from_backend(settings,
                                                                     self.framing_network)
        return self._framing_predictor

    def coarse_predictor(self) -> 'LandmarkPredictor':
        """This predictor without its refinement model (itself when it has none): the landmark
        model's own positions, which framing and its face check compare."""
        if self.refiner is None:
            return self
        if getattr(self, '_coarse_predictor', None) is None:
            self._coarse_predictor = LandmarkPredictor.from_backend(
                self.settings, self.network, self.framing_network)
            self._coarse_predictor.source = self.source
        return self._coarse_predictor

    def _configure(self) -> None:
        self.names = list(self.settings['landmark_names'])
        self.input_size = tuple(self.settings['input_size'])  # (w, h)
        self.padding = self.settings['bbox_padding']
        # RGB-D models (settings 'inputs' ['rgb', 'depth']) take a 4th channel: see `depth`.
        self.needs_depth = 'depth' in self.settings.get('inputs', ['rgb'])
        self.mean = np.asarray(self.settings['mean'], np.float32).reshape(1, 1, -1)
        self.std = np.asarray(self.settings['std'], np.float32).reshape(1, 1, -1)
        self.backend = self.network.name  # 'pytorch' or 'onnxruntime'
        self.device = self.network.device
        self.refiner = None if self.refine_network is None else Refiner(
            self.refine_network, self.settings['refinement'], self.prepare,
            getattr(self, 'source', 'the model'))
        shape = (self.settings.get('error_calibration') or {}).get('shape')
        # (checked as data by `model.settings`)
        self.shape_prior = None if shape is None else ShapePrior.from_dict(shape)

    # -- the three stages ------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray, bbox: Optional[Sequence[float]] = None,
                   depth: Optional[np.ndarray] = None):
        """RGB uint8 (H, W, 3) -> normalised (3, h, w) float32 input, box centre and scale.

        An RGB-D model also needs `depth`, the (H, W) map registered to the image (any units,
        NaN or <= 0 missing); it is warped like the image and becomes the 4th channel.

        The box (x, y, w, h; default the whole image) is padded and widened to the input's aspect
        ratio exactly as GetBBoxCenterScale + TopdownAffine do, so results match MMPose.
        """
        height, width = image.shape[:2]
        x, y, w, h = bbox if bbox is not None else (0, 0, width, height)
        center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
        scale = self.box_scale((x, y, w, h))
        matrix = warp_matrix(center, scale, self.input_size)
        return self.prepare(image, depth, matrix, self.input_size), center, scale

    def box_scale(self, bbox) -> np.ndarray:
        """The (w, h) region the network sees for a face box: padded, widened to the input's
        aspect ratio (GetBBoxCenterScale + TopdownAffine)."""
        scale = np.array(bbox[2:4], np.float32) * self.padding
        input_w, input_h = self.input_size
        aspect = input_w / input_h
        if scale[0] > scale[1] * aspect:
            return np.array([scale[0], scale[0] / aspect], np.float32)
        return np.array([scale[1] * aspect, scale[1]], np.float32)

    def prepare(self, image: np.ndarray, depth: Optional[np.ndarray], matrix: np.ndarray,
                size) -> np.ndarray:
        """The region `matrix` maps onto a `size` (w, h) input, normalised (C, h, w) float32;
        an RGB-D model's depth map is warped alike into the 4th channel."""
        crop = cv2.warpAffine(image, matrix, tuple(size), flags=cv2.INTER_LINEAR)
        if self.needs_depth:
            if depth is None:
                raise UserError('this model is RGB-D and needs the depth map of each photograph; '
                                'pass --depth-path FILE|FOLDER')
            check_depth_size(np.asarray(depth), image.shape, 'depth map')
            channel = cv2.warpAffine(depth_channel(depth), matrix, tuple(size),
                                     flags=cv2.INTER_LINEAR)
            crop = np.concatenate([crop.astype(np.float32), channel[..., None]], axis=2)
        normalised = (crop.astype(np.float32) - self.mean) / self.std
        return normalised.transpose(2, 0, 1)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, h, w) float32 -> heatmaps (N, K, h/4, w/4) float32, checked (`check_heatmaps`:
        an output of any other shape is one line, never a crash in the decoder)."""
        return check_heatmaps(self.network(batch), len(batch), len(self.names), self.input_size,
                              getattr(self, 'source', 'the model'))

    def postprocess(self, heatmaps: np.ndarray, centers, scales):
        """Heatmaps -> keypoints (N, K, 2) in original-image pixels and scores (N, K)."""
        decoder = self.settings['decoder']
        keypoints, scores = decode_heatmaps(heatmaps, self.input_size, decoder['unbiased'],
                                            decoder['blur_kernel_size'])
        centers, scales = np.asarray(centers)[:, None], np.asarray(scales)[:, None]
        input_size = np.asarray(self.input_size, np.float32)
        return keypoints / input_size * scales + centers - 0.5 * scales, scores

    def __call__(self, images: Sequence[np.ndarray], bboxes=None,
                 batch_size: int = 8, depths=None) -> list[Prediction]:
        """Predict landmarks for RGB images; `bboxes` is None or one (x, y, w, h)/None per image;
        `depths` (RGB-D models) one depth map per image. With a refinement model the positions
        are refined (`coarse_predictor`: without)."""
        boxes = []
        for i, image in enumerate(images):
            box = None if bboxes is None else bboxes[i]
            height, width = image.shape[:2]
            boxes.append((0.0, 0.0, float(width), float(height)) if box is None
                         else check_bbox(box, width, height))
        results = []
        for start in range(0, len(images), batch_size):
            chunk = range(start, min(start + batch_size, len(images)))
            prepared = [self.preprocess(images[i], boxes[i],
                                        None if depths is None else depths[i]) for i in chunk]
            heatmaps = self.infer(np.stack([p[0] for p in prepared]))
            keypoints, scores = self.postprocess(heatmaps, [p[1] for p in prepared],
                                                 [p[2] for p in prepared])
            shifts = unsure = [None] * len(chunk)
            if self.refiner is not None:
                refined, unsure = self.refiner(
                    [images[i] for i in chunk], keypoints, [p[2] for p in prepared],
                    None if depths is None else [depths[i] for i in chunk])
                shifts = np.linalg.norm(np.asarray(refined) - keypoints, axis=-1)
                keypoints = refined
            spreads = self.spread_px(heatmaps, [p[2] for p in prepared])
            for j, i in enumerate(chunk):
                prediction = Prediction(
                    self.names, keypoints[j], scores[j], boxes[i], spread=spreads[j],
                    refine_uncertainty=unsure[j],
                    interval_scale=(self.settings.get('error_calibration')
                                    or {}).get('interval_scale'))
                prediction.expected_error, prediction.radius90 = self.expected_errors(
                    spreads[j], shifts[j], unsure[j], keypoints[j])
                results.append(prediction)
        return results

    def _refine_framed(self, prediction: Prediction, image: np.ndarray,
                       depth: Optional[np.ndarray], framing) -> None:
        """The refinement model on a framed prediction, in the view the landmark model saw it
        in (a photograph turned for a tilted face is refined turned, a mirrored one mirrored:
        the model knows one direction)."""
        if self.refiner is None:
            return
        from cephalometric.prediction.framing import (
            mirror_box,
            mirror_keypoints,
            transform_points,
            turned_box,
            turned_view,
        )
        keypoints, box = np.asarray(prediction.keypoints, np.float32), list(prediction.bbox)
        matrix = None
        if framing.rotation:
            image, depth, matrix = turned_view(image, depth, framing.rotation)
            keypoints, box = transform_points(matrix, keypoints), turned_box(matrix, box)
        width = image.shape[1]
        if framing.mirrored:
            image, keypoints, box = (np.ascontiguousarray(image[:, ::-1]),
                                     mirror_keypoints(keypoints, width), mirror_box(box, width))
            depth = None if depth is None else np.ascontiguousarray(np.asarray(depth)[:, ::-1])
        refined, unsure = self.refiner([image], [keypoints], [self.box_scale(box)],
                                       None if depth is None else [depth])
        refined, prediction.refine_uncertainty = refined[0], unsure[0]
        shift = np.linalg.norm(np.asarray(refined) - keypoints, axis=-1)
        if framing.mirrored:
            refined = mirror_keypoints(refined, width)
        if matrix is not None:
            refined = transform_points(cv2.invertAffineTransform(matrix), refined)
        prediction.keypoints = refined
        prediction.expected_error, prediction.radius90 = self.expected_errors(
            prediction.spread, shift, prediction.refine_uncertainty, refined)

    def spread_px(self, heatmaps: np.ndarray, scales) -> np.ndarray:
        """`heatmaps.heatmap_spread` in pixels of each original image (N, K)."""
        heatmap_w, heatmap_h = heatmaps.shape[3], heatmaps.shape[2]
        scales = np.asarray(scales, np.float64).reshape(-1, 2)
        per_pixel = (scales[:, 0] / heatmap_w + scales[:, 1] / heatmap_h) / 2
        return heatmap_spread(heatmaps) * per_pixel[:, None]

    def expected_errors(self, spread: np.ndarray, refine_shift: Optional[np.ndarray] = None,
                        refine_uncertainty: Optional[np.ndarray] = None,
                        keypoints: Optional[np.ndarray] = None):
        """(expected error, 90% radius) in image pixels from the checkpoint's error calibration,
        or (None, None) without one, or without the refinement model its calibration was
        measured with. `refine_shift`, `refine_uncertainty`: how far the refinement model moved
        each point and how sure it is (px), which the calibration's `error_signal` may use;
        `keypoints` (K, 2): the tracing, which a calibration with a shape prior judges whole."""
        calibration = self.settings.get('error_calibration')
        if not calibration:
            return None, None
        deviation = None
        if self.shape_prior is not None and keypoints is not None:
            deviation = self.shape_prior.deviation(keypoints)
        signal = error_signal(spread, refine_shift, calibration.get('signal', 'spread'),
                              refine_uncertainty, deviation,
                              (calibration.get('shape') or {}).get('weight', 0.0))
        if signal is None:
            return None, None
        return (signal * np.asarray(calibration['expected_per_spread']),
                signal * np.asarray(calibration['radius90_per_spread']))

    def predict(self, images: Sequence[np.ndarray], bbox='auto', depths=None,
                batch_size: int = 8) -> list[Prediction]:
        """Landmarks with the face region found as `bbox` says, recorded in `.framing`.

        'auto': `framing.FaceFramer` finds the face box and the facing direction (a photograph
        framed wider than the training crops, or of the other side); 'full': the whole image is
        the face box (photographs cropped like the training data); (x, y, w, h): that box.
        """
        from cephalometric.prediction.framing import (
            FaceFramer,
            Framing,
            FramingPrior,
            review_reason,
        )
        if isinstance(bbox, str) and bbox not in FRAMING_MODES:
            raise UserError(f'bbox must be one of {", ".join(FRAMING_MODES)} or x,y,w,h, got '
                            f'{bbox!r}')
        if bbox == 'auto':
            # Framing compares the landmark model's positions with the framing model's (its face
            # check was measured so); the refinement model moves the final ones only, once.
            coarse = self.coarse_predictor()
            finder = self.framing_predictor()
            framer = FaceFramer(_PositionsRequired(coarse if finder is self else finder),
                                FramingPrior.from_dict(self.settings.get('framing_prior')),
                                measurer=None if finder is self else coarse,
                                face_check=self.settings.get('face_check'))
            results = []
            for i, image in enumerate(images):
                depth = None if depths is None else depths[i]
                try:
                    prediction, framing = framer(image, depth)
                except _NoPositions:
                    # The face finder's heatmaps hold NaN or infinity: no face to frame. The
                    # whole image's landmarks, all flagged for review, and no class.
                    prediction = self([image], None, batch_size=1,
                                      depths=None if depth is None else [depth])[0]
                    framing = Framing('auto', list(prediction.bbox), mean_score=0.0,
                                      review_reason=NO_POSITIONS_REASON)
                else:
                    self._refine_framed(prediction, image, depth, framing)
                prediction.framing = framing.to_dict()
                results.append(prediction)
            return results
        results = self(images, None if bbox == 'full' else [bbox] * len(images),
                       batch_size=batch_size, depths=depths)
        for image, prediction in zip(images, results):
            score = float(np.mean(prediction.scores))
            framing = Framing('full' if bbox == 'full' else 'bbox', list(prediction.bbox),
                              mean_score=score,
                              review_reason=review_reason(prediction.bbox, score, image=image))
            prediction.framing = framing.to_dict()
        return results
