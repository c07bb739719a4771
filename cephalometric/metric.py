"""Old import path of `cephalometric.mmpose_plugins.metric`.

Kept because configs and checkpoints written before the package layout (0.3) name it in
`custom_imports`.
"""
from cephalometric.mmpose_plugins.metric import *  # noqa: F401,F403
