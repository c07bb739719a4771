"""Landmark prediction from a trained model: numpy RGB in, pixel coordinates out.

One small class in the style of rtmlib: `preprocess` (crop the face box and normalise, exactly as
MMPose's GetBBoxCenterScale + TopdownAffine + PoseDataPreprocessor do), `infer` (the network),
`postprocess` (MSRAHeatmap decoding, DARK included, vectorised over the batch, mapped back to the
original image). Results agree with MMPose's `inference_topdown` to well under 0.1 px
(tests/test_predictor.py).

Two backends run the network:
- 'pytorch' (default for a .pth written by training): the checkpoint's model, batch norm folded into
  the convolutions, channels-last on a CPU. The resolved config and the landmark names come from the
  checkpoint's metadata.
- 'onnxruntime' (default for a .onnx written by export_onnx.py): ONNX Runtime's CPU kernels, the
  fastest path on a CPU (see benchmark.py). A .onnx file carries the landmark names and the
  preprocessing settings in its metadata and needs only numpy, OpenCV and onnxruntime: no torch or
  MMPose. Given a .pth, this backend exports the model in memory first (a few seconds).
"""
from __future__ import annotations

import copy
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from .errors import UserError

BACKENDS = ('auto', 'pytorch', 'onnxruntime')
# ONNX metadata_props keys; every value is JSON.
ONNX_METADATA_KEYS = ('landmark_names', 'input_size', 'bbox_padding', 'mean', 'std', 'decoder')
OPENCV_MAX_CHANNELS = 512


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


def settings_from_config(cfg, names: Sequence[str]) -> dict:
    """What inference needs besides the weights (the ONNX metadata holds exactly this)."""
    decoder = dict(cfg.model.head.decoder)
    if decoder.get('type') != 'MSRAHeatmap':
        raise UserError(f'LandmarkPredictor decodes MSRAHeatmap heatmaps; the config uses '
                        f'{decoder.get("type")}')
    preprocessor = cfg.model.data_preprocessor
    return {
        'landmark_names': list(names),
        'input_size': [int(v) for v in decoder['input_size']],  # (w, h)
        'bbox_padding': float(_pipeline_step(cfg, 'GetBBoxCenterScale').get('padding', 1.25)),
        'mean': [float(v) for v in preprocessor['mean']],  # RGB order
        'std': [float(v) for v in preprocessor['std']],
        'decoder': {'heatmap_size': [int(v) for v in decoder['heatmap_size']],
                    'unbiased': bool(decoder.get('unbiased', False)),
                    'blur_kernel_size': int(decoder.get('blur_kernel_size', 11))},
    }


def warp_matrix(center: np.ndarray, scale: np.ndarray, size) -> np.ndarray:
    """MMPose's get_warp_matrix without rotation: the box (center, w/h) onto a (w, h) input."""
    w, h = size
    src = np.float32([center, center + [-0.5 * scale[0], 0.0]])
    dst = np.float32([[0.5 * w, 0.5 * h], [0.0, 0.5 * h]])
    # Third point: b + (a - b) turned by 90 degrees, as MMPose's _get_3rd_point.
    src, dst = (np.vstack([p, p[1] + [p[1, 1] - p[0, 1], p[0, 0] - p[1, 0]]]) for p in (src, dst))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def decode_heatmaps(heatmaps: np.ndarray, input_size, unbiased: bool = True,
                    blur_kernel_size: int = 11):
    """MSRAHeatmap.decode for a whole batch at once.

    (N, K, H, W) heatmaps -> keypoints (N, K, 2) in input pixels and scores (N, K). Same arithmetic
    as MMPose (argmax; DARK: Gaussian-modulated log-heatmap and one Newton step; else a quarter
    pixel towards the higher neighbour), without its per-keypoint Python loop.
    """
    n, k, h, w = heatmaps.shape
    maps = heatmaps.reshape(n * k, h, w).astype(np.float32)
    flat = maps.reshape(n * k, h * w)
    index = flat.argmax(1)
    scores = flat.max(1)
    x, y = index % w, index // w
    keypoints = np.stack([x, y], 1).astype(np.float32)
    keypoints[scores <= 0] = -1
    if unbiased:
        inside = (scores > 0) & (1 < x) & (x < w - 2) & (1 < y) & (y < h - 2)
        keypoints[inside] += _dark_offsets(maps, x[inside], y[inside], inside, blur_kernel_size)
    else:
        ok = scores > 0
        xs, ys = np.where(ok, x, 1), np.where(ok, y, 1)  # any in-range index where not used
        rows = np.arange(n * k)
        dx = np.where(ok & (1 < x) & (x < w - 1) & (0 < y),
                      maps[rows, ys, np.minimum(xs + 1, w - 1)] - maps[rows, ys, xs - 1], 0)
        dy = np.where(ok & (1 < y) & (y < h - 1) & (0 < x),
                      maps[rows, np.minimum(ys + 1, h - 1), xs] - maps[rows, ys - 1, xs], 0)
        keypoints += np.sign(np.stack([dx, dy], 1)).astype(np.float32) * 0.25
    scale_factor = (np.asarray(input_size) / [w, h]).astype(np.float32)
    return (keypoints * scale_factor).reshape(n, k, 2), scores.reshape(n, k)


def _dark_offsets(maps, x, y, inside, kernel: int) -> np.ndarray:
    """Sub-pixel offsets of DARK (MMPose's gaussian_blur + refine_keypoints_dark) at (x, y)."""
    maps = maps[inside]
    m, h, w = maps.shape
    border = (kernel - 1) // 2
    padded = np.zeros((h + 2 * border, w + 2 * border, m), np.float32)  # zero border, as MMPose
    padded[border:-border, border:-border] = maps.transpose(1, 2, 0)
    for start in range(0, m, OPENCV_MAX_CHANNELS):
        part = np.ascontiguousarray(padded[..., start:start + OPENCV_MAX_CHANNELS])
        padded[..., start:start + OPENCV_MAX_CHANNELS] = cv2.GaussianBlur(part, (kernel, kernel), 0)
    blurred = padded[border:-border, border:-border].transpose(2, 0, 1)
    with np.errstate(divide='ignore', invalid='ignore'):
        blurred = blurred * (maps.max((1, 2)) / blurred.max((1, 2)))[:, None, None]
    log = np.log(np.maximum(blurred, 1e-10))
    rows = np.arange(m)

    def at(dy, dx):
        return log[rows, y + dy, x + dx]

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    det = dxx * dyy - dxy ** 2
    safe = np.where(det != 0, det, 1)
    offsets = -np.stack([dyy * dx - dxy * dy, dxx * dy - dxy * dx], 1) / safe[:, None]
    return np.where((det != 0)[:, None], offsets, 0).astype(np.float32)


class LandmarkPredictor:
    """HRNet top-down landmark model from a training checkpoint (.pth) or an exported .onnx.

    Args:
        checkpoint: .pth written by training (e.g. work_dirs/cephalometric/best_MRE.pth) or .onnx
            written by export_onnx.py.
        device: 'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.
        fuse_batch_norm: fold batch norm into the preceding convolutions (same results, faster).
        backend: 'pytorch', 'onnxruntime' or 'auto' (onnxruntime for a .onnx, else pytorch).
        threads: CPU threads for the network (default: the library's, one per core). For pytorch
            this sets torch's process-wide thread count.
    """

    def __init__(self, checkpoint: str, device: str = 'auto', fuse_batch_norm: bool = True,
                 backend: str = 'auto', threads: Optional[int] = None):
        if backend not in BACKENDS:
            raise UserError(f'backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
        is_onnx = str(checkpoint).lower().endswith('.onnx')
        if backend == 'auto':
            backend = 'onnxruntime' if is_onnx else 'pytorch'
        if is_onnx and backend != 'onnxruntime':
            raise UserError(f'{checkpoint} is an ONNX model: use backend onnxruntime')
        self.backend, self.model, self.session = backend, None, None
        if is_onnx:
            if not os.path.isfile(checkpoint):
                raise UserError(f'ONNX model not found: {checkpoint}')
            self.session = _onnx_session(checkpoint, device, threads)
            metadata = self.session.get_modelmeta().custom_metadata_map
            missing = [key for key in ONNX_METADATA_KEYS if key not in metadata]
            if missing:
                raise UserError(f'{checkpoint} lacks {", ".join(missing)} in its metadata; export '
                                'it with export_onnx.py')
            self.settings = {key: json.loads(metadata[key]) for key in ONNX_METADATA_KEYS}
        else:
            self.settings = self._load_checkpoint(checkpoint, device, fuse_batch_norm)
            if threads and backend == 'pytorch':
                import torch
                torch.set_num_threads(threads)
        self.names = list(self.settings['landmark_names'])
        self.input_size = tuple(self.settings['input_size'])  # (w, h)
        self.padding = self.settings['bbox_padding']
        self.mean = np.asarray(self.settings['mean'], np.float32).reshape(1, 1, 3)
        self.std = np.asarray(self.settings['std'], np.float32).reshape(1, 1, 3)
        if backend == 'onnxruntime' and not is_onnx:
            self.session = _onnx_session(self.export_onnx(), device, threads)
        if self.session is not None:
            self.device = 'cpu' if self.session.get_providers()[0].startswith('CPU') else 'cuda'

    def _load_checkpoint(self, checkpoint: str, device: str, fuse_batch_norm: bool) -> dict:
        import cephalometric.mmcv_compat  # noqa: F401  (must precede mmpose)

        import torch
        from mmengine.config import Config
        from mmpose.registry import MODELS
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
        settings = settings_from_config(self.cfg, [id2name[i] for i in range(len(id2name))])
        model = MODELS.build(self.cfg.model)
        model.load_state_dict(data['state_dict'])
        model.eval()
        if fuse_batch_norm:
            from mmcv.cnn import fuse_conv_bn
            model = fuse_conv_bn(model)
        self.device = resolve_device(device)
        # NHWC lets oneDNN skip its layout conversions around every convolution on a CPU.
        self.memory_format = (torch.channels_last if self.device == 'cpu'
                              else torch.contiguous_format)
        self.model = model.to(self.device, memory_format=self.memory_format)
        return settings

    def export_onnx(self, path: Optional[str] = None) -> bytes:
        """The network as ONNX (batch size free), the settings in its metadata_props.

        Writes `path` when given; returns the serialised model either way.
        """
        if self.model is None:
            raise UserError('export_onnx needs a PyTorch checkpoint (.pth)')
        try:
            import onnx
        except ImportError:
            raise UserError('exporting to ONNX needs the onnx package: '
                            'pip install -r requirements.txt') from None
        import torch

        class HeatmapNet(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, inputs):
                return self.model._forward(inputs)

        net = HeatmapNet(copy.deepcopy(self.model).cpu()).eval()
        width, height = self.input_size
        buffer = io.BytesIO()
        # TorchScript exporter: needs only `onnx` (the dynamo one also needs onnxscript). Its
        # deprecation and tracer notes (HRNet's fixed upsampling sizes) are expected here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(net, (torch.zeros(1, 3, height, width),), buffer, dynamo=False,
                              input_names=['input'], output_names=['heatmaps'], opset_version=17,
                              dynamic_axes={'input': {0: 'batch'}, 'heatmaps': {0: 'batch'}})
        proto = onnx.load_from_string(buffer.getvalue())
        for key in ONNX_METADATA_KEYS:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(self.settings[key])
        data = proto.SerializeToString()
        if path is not None:
            from .atomic import atomic_path
            with atomic_path(path) as temporary, open(temporary, 'wb') as stream:
                stream.write(data)
        return data

    # -- the three stages ------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray, bbox: Optional[Sequence[float]] = None):
        """RGB uint8 (H, W, 3) -> normalised (3, h, w) float32 input, box centre and scale.

        The box (x, y, w, h; default the whole image) is padded and widened to the input's aspect
        ratio exactly as GetBBoxCenterScale + TopdownAffine do, so results match MMPose.
        """
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
        crop = cv2.warpAffine(image, warp_matrix(center, scale, self.input_size),
                              (input_w, input_h), flags=cv2.INTER_LINEAR)
        normalised = (crop.astype(np.float32) - self.mean) / self.std
        return normalised.transpose(2, 0, 1), center, scale

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, h, w) float32 -> heatmaps (N, K, h/4, w/4) float32."""
        batch = np.ascontiguousarray(batch, np.float32)
        if self.session is not None:
            return self.session.run(None, {'input': batch})[0]
        import torch
        with torch.inference_mode():
            inputs = torch.from_numpy(batch).to(self.device, memory_format=self.memory_format)
            heatmaps = self.model._forward(inputs)
        return heatmaps.float().cpu().numpy()

    def postprocess(self, heatmaps: np.ndarray, centers, scales):
        """Heatmaps -> keypoints (N, K, 2) in original-image pixels and scores (N, K)."""
        decoder = self.settings['decoder']
        keypoints, scores = decode_heatmaps(heatmaps, self.input_size, decoder['unbiased'],
                                            decoder['blur_kernel_size'])
        centers, scales = np.asarray(centers)[:, None], np.asarray(scales)[:, None]
        input_size = np.asarray(self.input_size, np.float32)
        return keypoints / input_size * scales + centers - 0.5 * scales, scores

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


def _onnx_session(model, device: str, threads: Optional[int] = None):
    """ONNX Runtime session for a path or serialised model; CUDA when asked for and available."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError('the onnxruntime backend needs the onnxruntime package: '
                        'pip install -r requirements.txt') from None
    available = onnxruntime.get_available_providers()
    if device.startswith('cuda') and 'CUDAExecutionProvider' not in available:
        raise UserError(f'--device {device} with onnxruntime needs onnxruntime-gpu; use --device '
                        'cpu or --backend pytorch')
    use_cuda = device.startswith('cuda') or (device == 'auto'
                                             and 'CUDAExecutionProvider' in available)
    providers = (['CUDAExecutionProvider'] if use_cuda else []) + ['CPUExecutionProvider']
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model, options, providers=providers)
