"""MMPose's own inference path, as its documentation builds it: the reference we must agree with.

`stock_model` builds the model with `mmpose.apis.init_model` from a checkpoint's stored
config (data, turned into an MMEngine Config object without executing anything; the architecture
checked as in `checkpoint.load_published`); `stock_predict` runs `inference_topdown` on one
RGB image. Used by the parity tests and benchmark.py.
"""
from __future__ import annotations

import numpy as np


def stock_model(checkpoint: str, device: str):
    """MMPose's inference model for a published checkpoint (best_MRE.pth)."""
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from mmengine.config import Config
    from mmpose.apis import init_model

    from cephalometric.model.checkpoint import (
        allow_checkpoint_globals,
        load_checkpoint_file,
        model_registry_types,
        stored_config,
    )
    from cephalometric.model.settings import check_model_config

    allow_checkpoint_globals()  # torch >= 2.6 refuses the numpy metadata otherwise
    config = dict(stored_config(load_checkpoint_file(checkpoint)['meta'], checkpoint))
    config['model'] = check_model_config(config.get('model'), model_registry_types(), checkpoint)
    return init_model(Config(config), checkpoint, device=device)


def stock_predict(model, image_rgb: np.ndarray, depth=None) -> np.ndarray:
    """Keypoints (K, 2) of one RGB image, whole image as the box, by `inference_topdown`.

    An RGB-D model also takes the image's depth map: inference_topdown has no place for it, so its
    few lines run here with the depth beside the image (the model's own test pipeline loads it).
    """
    from mmpose.apis import inference_topdown
    image_bgr = np.ascontiguousarray(image_rgb[..., ::-1])  # MMPose: BGR
    if depth is None:
        return inference_topdown(model, image_bgr)[0].pred_instances.keypoints[0]
    import torch
    from mmengine.dataset import Compose, pseudo_collate
    height, width = image_bgr.shape[:2]
    info = dict(img=image_bgr, depth_map=depth, bbox=np.array([[0, 0, width, height]], np.float32),
                bbox_score=np.ones(1, np.float32), **model.dataset_meta)
    data = Compose(model.cfg.test_dataloader.dataset.pipeline)(info)
    with torch.no_grad():
        result = model.test_step(pseudo_collate([data]))
    return result[0].pred_instances.keypoints[0]
