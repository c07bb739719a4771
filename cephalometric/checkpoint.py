"""Loading and writing this project's checkpoints on torch >= 2.6.

torch.load now defaults to weights_only=True, which refuses the numpy objects MMEngine keeps in a
checkpoint's metadata (`numpy.core.multiarray._reconstruct`, dtypes), so inference and `--resume`
failed with UnpicklingError. We allow-list exactly those harmless types instead of turning the
check off.

Training checkpoints (epoch_N.pth, for --resume) also hold MMEngine's message hub, whose history
buffers pickle bound methods through `getattr`. Allowing `getattr` would let a crafted file run code,
so it is allowed only inside `resume_globals()`, which train_cephalometric.py uses for the run's own
work dir. The published model, best_MRE.pth, holds just weights and metadata and loads with the
strict list: that is the file to share and to give to inference.py.

Only load checkpoints (and pickles) from a trusted source: the allow-list narrows the attack surface,
it does not make an untrusted file safe.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path
from .errors import UserError

_registered = False


def _numpy_globals() -> list:
    types = [np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray, np.dtype,
             bytes]  # bytes: numpy scalars pickle their raw value as bytes
    # numpy >= 1.25 pickles dtypes as instances of these classes (np.dtypes.Float64DType, ...).
    types += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    return types


def allow_checkpoint_globals() -> None:
    """Allow-list the numpy types published checkpoints contain (idempotent)."""
    global _registered
    if not _registered:
        torch.serialization.add_safe_globals(_numpy_globals())
        _registered = True


@contextlib.contextmanager
def resume_globals():
    """Also allow what MMEngine's resume state needs, for the run's own training checkpoints."""
    from mmengine.logging import HistoryBuffer
    allow_checkpoint_globals()
    with torch.serialization.safe_globals([HistoryBuffer, getattr]):
        yield


def load_checkpoint_file(path: str, map_location: Any = 'cpu') -> dict:
    """torch.load a published checkpoint (best_MRE.pth); UserError with one line on failure."""
    if not os.path.isfile(path):
        raise UserError(f'checkpoint not found: {path}; pass the .pth written by training, '
                        'e.g. work_dirs/cephalometric/best_MRE.pth')
    allow_checkpoint_globals()
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file, not a checkpoint, unknown pickled type
        message = str(error).strip()
        reason = message.splitlines()[0] if message else type(error).__name__
        if 'Unsupported global' in message:
            reason = message[message.index('Unsupported global'):].split('.')[0]
        raise UserError(f'cannot read checkpoint {path} ({reason}); pass best_MRE.pth from '
                        'train_cephalometric.py') from None
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise UserError(f'{path} is not an MMEngine checkpoint (no state_dict); '
                        'pass best_MRE.pth from train_cephalometric.py')
    return checkpoint


def save_published_checkpoint(runner, path: str, extra_meta: dict | None = None) -> None:
    """Write weights + metadata (config text, landmark names, epoch) atomically to `path`.

    No optimizer, scheduler or message-hub state: a third of the size, and loadable with the strict
    allow-list. The metadata matches what MMEngine's Runner writes, so MMPose's own tools
    (init_model, inference_topdown) read it too.
    """
    import mmengine
    from mmengine.model import is_model_wrapper
    from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu

    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    meta = dict(
        cfg=runner.cfg.pretty_text,
        dataset_meta=runner.train_dataloader.dataset.metainfo,
        epoch=runner.epoch,
        iter=runner.iter,
        seed=runner.seed,
        experiment_name=runner.experiment_name,
        time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
        mmengine_version=mmengine.__version__)
    meta.update(extra_meta or {})
    with atomic_path(path) as temporary:
        torch.save(dict(meta=meta, state_dict=weights_to_cpu(get_state_dict(model))), temporary)
