"""Old import path of `cephalometric.mmpose_plugins.transforms`.

Kept because configs and checkpoints written before the package layout (0.3) name it in
`custom_imports`.
"""
from cephalometric.mmpose_plugins.transforms import *  # noqa: F401,F403
