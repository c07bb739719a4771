"""Old import path of `cephalometric.training.hooks`.

Kept because configs and checkpoints written before the package layout (0.3) name it in
`custom_imports`.
"""
from cephalometric.training.hooks import *  # noqa: F401,F403
