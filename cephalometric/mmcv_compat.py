"""Old import path of `cephalometric.mmpose_plugins.mmcv_compat`.

Kept because configs and checkpoints written before the package layout (0.3) name it in
`custom_imports`.
"""
from cephalometric.mmpose_plugins.mmcv_compat import *  # noqa: F401,F403
