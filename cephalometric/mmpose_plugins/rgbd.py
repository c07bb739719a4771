"""RGB-D on the model side: the 4-channel input, its normalisation and its initial weights.

Its job, for a dataset prepared with `--image-source rgbd` (`data.reader.read_inputs` says
['rgb', 'depth']):

- `use_inputs(cfg, inputs)` turns the (RGB) training config into the RGB-D one: HRNet's stem takes
  4 channels, the data preprocessor becomes `RGBDDataPreprocessor`, every pipeline gets LoadDepth /
  WarpDepth / StackDepth (`transforms`), and `DepthInputWeightsHook` adapts the initial weights.
  For ['rgb'] it changes nothing.
- `RGBDDataPreprocessor`: MMEngine's ImgDataPreprocessor swaps BGR to RGB only for exactly 3
  channels and accepts only 1 or 3 means; this one swaps the first three of B, G, R, depth and
  normalises the photo with the usual ImageNet mean/std and the depth channel (0..255 nearness,
  see `depth`) with depth_mean/depth_std (127.5/127.5 -> about -1..1, 'no reading' -> -1).
- `DepthInputWeightsHook`: MMEngine's `load_from` skips weights whose shape differs, so the
  3-channel first convolution of the AFLW checkpoint (or of `--load-from`) would silently stay
  random. The hook widens it as it is loaded: the RGB filters are the pretrained ones, the depth
  filters start at zero, so the 4-channel model first computes exactly what the pretrained RGB
  model computes and learns from there what depth adds (--no-pretrained: all filters random).
"""
from __future__ import annotations

from typing import Sequence

import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpose.models.data_preprocessors import PoseDataPreprocessor
from mmpose.registry import HOOKS, MODELS

from cephalometric.data.depth import DEPTH_MEAN, DEPTH_STD, RGBD_INPUTS
from cephalometric.mmpose_plugins import transforms  # noqa: F401  (registers LoadDepth, WarpDepth, StackDepth)

FIRST_CONV = 'backbone.conv1.weight'
MODULES = ('cephalometric.mmpose_plugins.transforms', 'cephalometric.mmpose_plugins.rgbd')


@MODELS.register_module()
class RGBDDataPreprocessor(PoseDataPreprocessor):
    """PoseDataPreprocessor for B, G, R, depth inputs (see the module docstring)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 depth_mean: float = DEPTH_MEAN, depth_std: float = DEPTH_STD,
                 bgr_to_rgb: bool = True, **kwargs):
        super().__init__(mean=None, std=None, bgr_to_rgb=False, rgb_to_bgr=False, **kwargs)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError('RGBDDataPreprocessor takes the photo\'s 3 means and stds; the depth '
                             'channel has depth_mean/depth_std')
        self._swap_photo = bool(bgr_to_rgb)
        self._enable_normalize = True
        self.register_buffer('mean', torch.tensor([*mean, depth_mean], dtype=torch.float32)
                             .view(-1, 1, 1), False)
        self.register_buffer('std', torch.tensor([*std, depth_std], dtype=torch.float32)
                             .view(-1, 1, 1), False)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if self._swap_photo:
            order = [2, 1, 0, 3]
            inputs = inputs[:, order] if isinstance(inputs, torch.Tensor) else \
                [item[order] for item in inputs]
            data = dict(data, inputs=inputs)
        return super().forward(data, training)


@HOOKS.register_module()
class DepthInputWeightsHook(Hook):
    """Widen a 3-channel first convolution in a checkpoint being loaded into a 4-channel model."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        target = model.backbone.conv1.weight
        state = checkpoint.get('state_dict', checkpoint)
        for key in (FIRST_CONV, f'module.{FIRST_CONV}'):
            weight = state.get(key)
            if (isinstance(weight, torch.Tensor) and weight.ndim == 4
                    and weight.shape[1] == 3 and target.shape[1] == 4
                    and weight.shape[0] == target.shape[0]):
                state[key] = expand_first_conv(weight)
                runner.logger.info(f'{key}: pretrained RGB filters kept, depth filters start at '
                                   'zero (4-channel RGB-D input)')


def expand_first_conv(weight: torch.Tensor) -> torch.Tensor:
    """(out, 3, k, k) -> (out, 4, k, k): the same RGB filters and zero depth filters."""
    return torch.cat([weight, torch.zeros_like(weight[:, :1])], dim=1)


def _insert(pipeline: list, after: str | None, before: str | None, step: dict) -> None:
    if any(existing.get('type') == step['type'] for existing in pipeline):
        return
    types = [existing.get('type') for existing in pipeline]
    if after is not None and after in types:
        pipeline.insert(types.index(after) + 1, step)
    elif before is not None and before in types:
        pipeline.insert(types.index(before), step)
    else:
        raise ValueError(f'the pipeline has no {after or before} step for {step["type"]}')


def rgbd_pipeline(pipeline: list) -> list:
    """A copy of an MMPose top-down pipeline that also loads, warps and stacks the depth map."""
    steps = [dict(step) for step in pipeline]
    _insert(steps, 'LoadImage', None, dict(type='LoadDepth'))
    affine = next((s for s in steps if s.get('type') == 'TopdownAffine'), {})
    _insert(steps, 'TopdownAffine', None,
            dict(type='WarpDepth', use_udp=bool(affine.get('use_udp', False))))
    _insert(steps, None, 'PackPoseInputs', dict(type='StackDepth'))
    return steps


def use_inputs(cfg, inputs: Sequence[str]) -> None:
    """Set up `cfg` for the dataset's inputs: ['rgb'] leaves it as is, ['rgb', 'depth'] is RGB-D."""
    if list(inputs) != list(RGBD_INPUTS):
        return
    cfg.model.backbone.in_channels = 4
    preprocessor = cfg.model.data_preprocessor
    if preprocessor.get('type') != 'RGBDDataPreprocessor':
        cfg.model.data_preprocessor = dict(
            type='RGBDDataPreprocessor', mean=list(preprocessor['mean'])[:3],
            std=list(preprocessor['std'])[:3], depth_mean=DEPTH_MEAN, depth_std=DEPTH_STD,
            bgr_to_rgb=bool(preprocessor.get('bgr_to_rgb', True)))
    for name in ('train_pipeline', 'val_pipeline', 'test_pipeline'):
        if name in cfg:
            cfg[name] = rgbd_pipeline(cfg[name])
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if name in cfg and 'pipeline' in cfg[name].get('dataset', {}):
            cfg[name].dataset.pipeline = rgbd_pipeline(cfg[name].dataset.pipeline)
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(hook.get('type') == 'DepthInputWeightsHook' for hook in hooks):
        cfg.custom_hooks = hooks + [dict(type='DepthInputWeightsHook')]
    imports = cfg.get('custom_imports') or dict(imports=[], allow_failed_imports=False)
    names = list(imports.get('imports', []))
    cfg.custom_imports = dict(imports, imports=names + [m for m in MODULES if m not in names])
