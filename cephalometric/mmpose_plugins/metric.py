"""The validation metric MMEngine runs after every epoch, registered as `MeanRadialError`.

Its job: collect each validation image's predicted and true landmarks (MMPose's top-down pipeline
has already mapped predictions back to the original image, so errors are in pixels of the original
photograph; `mm_per_pixel` written per image by prepare_cephalometric_data.py turns them into
millimetres) and summarise them with `cephalometric.radial_error`, the statistics evaluate.py uses
too.
In a multi-process run each process holds its share of the images; MMEngine gathers them on rank 0
(every image once, no padding: the config's val sampler has round_up=False) before
`compute_metrics`. Used in the config as `val_evaluator = dict(type='MeanRadialError', ...)`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpose.registry import METRICS

from cephalometric.radial_error import radial_errors, summarize_radial_errors


@METRICS.register_module()
class MeanRadialError(BaseMetric):
    """MRE (primary key 'MRE', pixels; lower is better), SD, SDR and per-landmark MRE.

    Args:
        sdr_radii_mm: SDR radii in mm, used when any image has pixel spacing.
        sdr_radii_px: SDR radii in pixels, used when no image has spacing.
        per_landmark: also report 'MRE/<landmark name>'.
    """

    default_prefix: Optional[str] = ''  # keys stay 'MRE', 'SDR@2mm', ... as clinicians say them

    def __init__(self,
                 sdr_radii_mm: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
                 sdr_radii_px: Sequence[float] = (2.0, 4.0, 6.0, 8.0),
                 per_landmark: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.sdr_radii_mm = tuple(sdr_radii_mm)
        self.sdr_radii_px = tuple(sdr_radii_px)
        self.per_landmark = per_landmark

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            gt = sample['gt_instances']
            visible = np.asarray(gt['keypoints_visible']).reshape(-1) > 0
            spacing = (sample.get('raw_ann_info') or {}).get('mm_per_pixel')
            self.results.append(dict(
                pred=np.asarray(sample['pred_instances']['keypoints'])[0, :, :2],
                truth=np.asarray(gt['keypoints'])[0, :, :2],
                visible=visible,
                mm_per_pixel=np.nan if spacing is None else float(spacing)))

    def compute_metrics(self, results: list) -> dict:
        pred = np.stack([r['pred'] for r in results])
        truth = np.stack([r['truth'] for r in results])
        visible = np.stack([r['visible'] for r in results])
        spacing = np.array([r['mm_per_pixel'] for r in results], float)
        names = None
        if self.dataset_meta and 'keypoint_id2name' in self.dataset_meta:
            id2name = self.dataset_meta['keypoint_id2name']
            names = [id2name[i] for i in range(pred.shape[1])]
        metrics = summarize_radial_errors(
            radial_errors(pred, truth), visible, spacing, names,
            sdr_radii_mm=self.sdr_radii_mm, sdr_radii_px=self.sdr_radii_px,
            per_landmark=self.per_landmark)
        summary = ', '.join(f'{k} {v:.3f}' for k, v in metrics.items() if '/' not in k)
        MMLogger.get_current_instance().info(f'Evaluated {len(results)} images: {summary}')
        return metrics
