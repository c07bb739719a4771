"""Let MMPose import on mmcv-lite, the pure-Python build of mmcv without compiled ops.

Import this module before anything from mmpose (our scripts do; configs list it first in
`custom_imports`). Full mmcv needs a 30-45 minute C++/CUDA build, while mmcv-lite installs in
seconds and has everything HRNet top-down training and inference use. mmpose 1.3.2, however,
imports `mmcv.ops.MultiScaleDeformableAttention` unconditionally in two transformer-head modules we
never use (EDPose), and `mmcv.ops` cannot load without the compiled `mmcv._ext`.

When the real `mmcv.ops` loads, this module does nothing. Otherwise it registers a small stand-in
`mmcv.ops` that defines only the names mmpose imports unconditionally; instantiating any of them
raises `MissingCompiledOpError` naming full mmcv as the fix. Names imported inside mmpose's own
`try/except ImportError` guards (DeformConv2d, nms, ...) are deliberately absent, so mmpose's
checks still see that the compiled ops are unavailable.
"""
from __future__ import annotations

import sys
import types
import warnings

from cephalometric.errors import UserError

FULL_MMCV_FIX = ('install full mmcv built for your torch instead of mmcv-lite: '
                 'pip uninstall -y mmcv-lite && pip install "mmcv==2.1.0" '
                 '(see README, Installation)')

# Names that mmpose 1.3.2 imports from mmcv.ops outside a try/except.
_UNCONDITIONAL_OPS = ('MultiScaleDeformableAttention', )


class MissingCompiledOpError(UserError, RuntimeError):
    """A compiled mmcv op was needed but only mmcv-lite is installed."""


def _missing_op(name: str) -> type:

    def __init__(self, *args, **kwargs):
        raise MissingCompiledOpError(f'mmcv.ops.{name} needs compiled mmcv ops; {FULL_MMCV_FIX}')

    return type(name, (), {'__init__': __init__, '__doc__': f'Stand-in for mmcv.ops.{name}.'})


def _real_ops_available() -> bool:
    try:
        import mmcv.ops  # noqa: F401
        return True
    except (ImportError, OSError):
        # A failed import can leave half-initialised submodules behind; drop them so the stand-in
        # is the only mmcv.ops anyone sees.
        for name in [n for n in sys.modules if n == 'mmcv.ops' or n.startswith('mmcv.ops.')]:
            del sys.modules[name]
        return False


def _silence_known_warnings() -> None:
    # Both are expected on this stack and say nothing the user can act on: mmengine imports
    # pkg_resources (hence setuptools<81), and mmcv-lite notes the op we replace above.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')


def install() -> bool:
    """Install the stand-in if needed. Returns True when the stand-in is in use. Idempotent."""
    _silence_known_warnings()
    current = sys.modules.get('mmcv.ops')
    if current is not None:
        return bool(getattr(current, '__cephalometric_stand_in__', False))
    if _real_ops_available():
        return False
    import mmcv

    stand_in = types.ModuleType('mmcv.ops',
                                'Stand-in for compiled mmcv ops (mmcv-lite is installed).')
    stand_in.__cephalometric_stand_in__ = True
    for name in _UNCONDITIONAL_OPS:
        setattr(stand_in, name, _missing_op(name))
    sys.modules['mmcv.ops'] = stand_in
    mmcv.ops = stand_in
    return True


USING_STAND_IN = install()
