"""Loading this project's checkpoints on torch >= 2.6.

torch.load now defaults to weights_only=True, which refuses the few numpy and mmengine objects that
MMEngine stores in a checkpoint's metadata and resume state (e.g. `numpy.core.multiarray._reconstruct`),
so a plain `--resume` fails with UnpicklingError. We allow-list exactly those types instead of
switching the safety off: a checkpoint from an untrusted source still cannot run arbitrary code
through them. (A pickle or checkpoint can still execute code through torch.load with
weights_only=False: only load files from a trusted source.)
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .errors import UserError

_registered = False


def allow_checkpoint_globals() -> None:
    """Allow-list the numpy/mmengine types MMEngine checkpoints contain (idempotent)."""
    global _registered
    if _registered or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    from mmengine.logging import HistoryBuffer

    numpy_types = [np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray, np.dtype]
    # numpy >= 1.25 pickles dtypes as instances of these classes (np.dtypes.Float64DType, ...).
    numpy_types += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    torch.serialization.add_safe_globals(numpy_types + [HistoryBuffer])
    _registered = True


def load_checkpoint_file(path: str, map_location: Any = 'cpu') -> dict:
    """torch.load a checkpoint with the allow-list above; UserError with one line on failure."""
    if not os.path.isfile(path):
        raise UserError(f'checkpoint not found: {path}; pass the .pth written by training, '
                        'e.g. work_dirs/cephalometric/best_MRE.pth')
    allow_checkpoint_globals()
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file, not a checkpoint, unknown pickled type
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f'cannot read checkpoint {path} ({first_line}); '
                        'pass a .pth file written by train_cephalometric.py') from None
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise UserError(f'{path} is not an MMEngine checkpoint (no state_dict); '
                        'pass a .pth file written by train_cephalometric.py')
    return checkpoint
