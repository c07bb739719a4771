"""The Mean Radial Error metric for MMPose configs, registered as `MeanRadialError`.

The class lives in the package, `cephalometric.metric`; this file only re-exports it for configs
and scripts that import `mre_metric`. The project's own config names the package module in
`custom_imports`.
"""
from cephalometric.mmpose_plugins.metric import MeanRadialError

__all__ = ['MeanRadialError']
