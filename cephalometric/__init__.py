"""Cephalometric landmarks on lateral face photographs, on MMPose.

    from cephalometric import LandmarkPredictor, compute_measurements
    predictor = LandmarkPredictor('work_dirs/cephalometric/best_MRE.pth')
    prediction = predictor.predict([rgb_image])[0]          # framing found automatically
    compute_measurements(prediction.names, prediction.keypoints)   # SNA, SNB, ANB, class, ...

The package is split by job (docs/architecture.md); these names are its public API, imported
when first used so that `import cephalometric` stays light (no torch, no MMPose).
"""
from importlib import import_module

__all__ = ['LandmarkPredictor', 'Prediction', 'prepare_dataset', 'compute_measurements',
           'tracing_certainty', 'UserError']

_WHERE = {'LandmarkPredictor': 'cephalometric.prediction.predictor',
          'Prediction': 'cephalometric.prediction.predictor',
          'prepare_dataset': 'cephalometric.data.writer',
          'compute_measurements': 'cephalometric.measurements',
          'tracing_certainty': 'cephalometric.uncertainty',
          'UserError': 'cephalometric.errors'}


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + __all__)
