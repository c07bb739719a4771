"""The network behind LandmarkPredictor: (N, 3, h, w) float32 in, heatmaps (N, K, h', w') out.

- `PyTorchBackend`: the MMPose model built from a checkpoint's stored architecture (data, checked by
  `model.settings.check_model_config`), batch norm folded into the convolutions, channels-last on
  a CPU. `HeatmapNet` wraps it as a plain nn.Module through MMPose's public pieces
  (`extract_feat`, then `head.forward`), also what the ONNX export traces.
- `OnnxRuntimeBackend`: ONNX Runtime's kernels for a .onnx file or serialised model; needs no torch
  or MMPose. ONNX Runtime's telemetry (which writes ~/.cache/Microsoft/DeveloperTools and
  $TMPDIR/.ses) is switched off with ORT_DISABLE_TELEMETRY before onnxruntime is imported.

`resolve_device` checks --device.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from cephalometric.cli import check_device
from cephalometric.errors import UserError, first_line


def resolve_device(device: str = 'auto') -> str:
    """The torch device to run on: 'auto' picks CUDA when present."""
    import torch
    check_device(device)
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise UserError(f'--device {device} but no CUDA GPU is visible; use --device cpu')
        index = int(device.split(':')[1]) if ':' in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f'--device {device} but only {torch.cuda.device_count()} GPU(s) are '
                            'visible; use cuda:0 or cpu')
    return device


def build_model(model_config: dict, state_dict: dict, source: str):
    """The MMPose model from a checked architecture dict and its weights, in eval mode."""
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from mmpose.registry import MODELS
    from mmpose.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import cephalometric.mmpose_plugins.rgbd  # noqa: F401  (registers RGBDDataPreprocessor, RGB-D models)
    try:
        model = MODELS.build(model_config)
        model.load_state_dict(state_dict)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = first_line(error)
        raise UserError(f'{source}: its weights do not fit its stored model ({reason[:200]}); '
                        'pass a checkpoint written by train_cephalometric.py') from None
    return model.eval()


def heatmap_net(model):
    """An nn.Module whose forward is MMPose's backbone + neck + head, via their public methods."""
    import torch

    class HeatmapNet(torch.nn.Module):
        def __init__(self, pose_model):
            super().__init__()
            self.pose_model = pose_model

        def forward(self, inputs):
            return self.pose_model.head.forward(self.pose_model.extract_feat(inputs))

    return HeatmapNet(model).eval()


class PyTorchBackend:
    """The checkpoint's network in PyTorch."""

    name = 'pytorch'

    def __init__(self, model_config: dict, state_dict: dict, source: str, device: str = 'auto',
                 fuse_batch_norm: bool = True, threads: Optional[int] = None):
        import torch
        self.device = resolve_device(device)
        model = build_model(model_config, state_dict, source)
        if fuse_batch_norm:
            from mmcv.cnn import fuse_conv_bn
            model = fuse_conv_bn(model)
        if threads:
            torch.set_num_threads(threads)
        # NHWC lets oneDNN skip its layout conversions around every convolution on a CPU.
        self.memory_format = (torch.channels_last if self.device == 'cpu'
                              else torch.contiguous_format)
        self.net = heatmap_net(model).to(self.device, memory_format=self.memory_format)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
            heatmaps = self.net(inputs.to(self.device, memory_format=self.memory_format))
        return heatmaps.float().cpu().numpy()


def import_onnxruntime():
    """onnxruntime with its telemetry off (it must be set before the first import)."""
    os.environ.setdefault('ORT_DISABLE_TELEMETRY', '1')
    try:
        import onnxruntime
    except ImportError:
        raise UserError('the onnxruntime backend needs the onnxruntime package: '
                        'pip install -r requirements.txt') from None
    return onnxruntime


class OnnxRuntimeBackend:
    """An ONNX model (path or bytes) in ONNX Runtime; CUDA when asked for and available."""

    name = 'onnxruntime'

    def __init__(self, model, source: str, device: str = 'auto', threads: Optional[int] = None):
        onnxruntime = import_onnxruntime()
        check_device(device)
        available = onnxruntime.get_available_providers()
        if device.startswith('cuda') and 'CUDAExecutionProvider' not in available:
            raise UserError(f'--device {device} with onnxruntime needs onnxruntime-gpu; use '
                            '--device cpu or --backend pytorch')
        use_cuda = device.startswith('cuda') or (device == 'auto'
                                                 and 'CUDAExecutionProvider' in available)
        providers = (['CUDAExecutionProvider'] if use_cuda else []) + ['CPUExecutionProvider']
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(model, options, providers=providers)
        except Exception as error:  # ONNX Runtime raises its own types for bad files
            reason = first_line(error, '', 200)
            raise UserError(f'cannot load ONNX model {source} ({reason or type(error).__name__}); '
                            'export it again with export_onnx.py') from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != 'input' or len(inputs[0].shape) != 4:
            raise UserError(f'{source} does not take one (N, 3, h, w) input named "input"; export '
                            'it with export_onnx.py')
        self.device = 'cpu' if self.session.get_providers()[0].startswith('CPU') else 'cuda'
        self.source = source

    def metadata(self) -> dict:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def check_fits(self, settings: dict, source: str) -> None:
        """Refuse metadata that does not describe this network (input size, channels, landmarks)
        and a network whose declared heatmaps are impossible: not (N, K, h, w), a size of 0 or
        larger than the input, a type other than floating point."""
        width, height = settings['input_size']
        expected_in = [len(settings['mean']), height, width]
        shape_in = self.session.get_inputs()[0].shape[1:]
        outputs = self.session.get_outputs()
        shape_out = list(outputs[0].shape) if len(outputs) == 1 else None
        count = len(settings['landmark_names'])
        if any(isinstance(v, int) and v != e for v, e in zip(shape_in, expected_in)):
            raise UserError(f'{source}: the network takes {shape_in} inputs but its metadata says '
                            f'{expected_in}; export it again with export_onnx.py')
        if self.session.get_inputs()[0].type != 'tensor(float)':
            raise UserError(f'{source}: the network takes {self.session.get_inputs()[0].type} '
                            'input, not float32; export it again with export_onnx.py')
        if shape_out is None or len(shape_out) != 4 or (
                isinstance(shape_out[1], int) and shape_out[1] != count):
            raise UserError(f'{source}: the network outputs {shape_out} heatmaps but its metadata '
                            f'names {count} landmarks; export it again with export_onnx.py')
        sides = [(shape_out[2], height), (shape_out[3], width)]
        if any(isinstance(side, int) and not 1 <= side <= limit for side, limit in sides) or (
                isinstance(shape_out[0], int) and shape_out[0] < 1):
            raise UserError(f'{source}: the network outputs {shape_out} heatmaps, impossible for '
                            f'a {width}x{height} input (each side 1 to the input\'s); export it '
                            'again with export_onnx.py')
        if outputs[0].type not in ('tensor(float)', 'tensor(float16)', 'tensor(double)'):
            raise UserError(f'{source}: the network outputs {outputs[0].type} heatmaps, not '
                            'floating point; export it again with export_onnx.py')

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {'input': np.ascontiguousarray(batch, np.float32)})[0]
        except Exception as error:   # ONNX Runtime's own types: a graph that cannot run this
            reason = first_line(error, '', 200)
            raise UserError(f'{getattr(self, "source", "the ONNX model")} cannot run on a batch '
                            f'of {len(batch)} ({reason or type(error).__name__}); export it again '
                            'with export_onnx.py') from None
