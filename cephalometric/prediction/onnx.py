"""The ONNX format of this project: a network and the settings it needs, in one file.

`export_onnx` traces `backends.heatmap_net` (backbone + neck + head) with a free batch size and
stores the inference settings in the model's metadata_props (one JSON value per key), so the .onnx
file alone is enough for inference. A checkpoint's framing and refinement models go into files
beside it, which the first names in its metadata under COMPANION_MODELS' keys
(`companion_model_path` follows such a name, as data). The checked export of a whole checkpoint
is `prediction.export`.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Optional

from cephalometric.errors import UserError
from cephalometric.model.settings import settings_to_metadata


def export_onnx(net, settings: dict, path: Optional[str] = None,
                extra_metadata: Optional[dict] = None) -> bytes:
    """`net` ((N, 3, h, w) -> heatmaps) as ONNX bytes with `settings` (and `extra_metadata`,
    JSON-encoded) in its metadata."""
    try:
        import onnx
    except ImportError:
        raise UserError('exporting to ONNX needs the onnx package: '
                        'pip install -r requirements.txt') from None
    import copy

    import torch

    net = copy.deepcopy(net).cpu().eval()
    width, height = settings['input_size']
    buffer = io.BytesIO()
    # TorchScript exporter: needs only `onnx` (the dynamo one also needs onnxscript). Its
    # deprecation and tracer notes (HRNet's fixed upsampling sizes) are expected here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        channels = len(settings['mean'])   # 3, or 4 for an RGB-D model (photo + depth)
        torch.onnx.export(net, (torch.zeros(1, channels, height, width),), buffer, dynamo=False,
                          input_names=['input'], output_names=['heatmaps'], opset_version=17,
                          dynamic_axes={'input': {0: 'batch'}, 'heatmaps': {0: 'batch'}})
    proto = onnx.load_from_string(buffer.getvalue())
    import json
    metadata = settings_to_metadata(settings)
    metadata.update({key: json.dumps(value) for key, value in (extra_metadata or {}).items()})
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    if path is not None:
        _write(path, data)
    return data


def _write(path: str, data: bytes) -> None:
    from cephalometric.atomic import atomic_path
    try:
        with atomic_path(path) as temporary, open(temporary, 'wb') as stream:
            stream.write(data)
    except OSError as error:
        raise UserError(f'cannot write {path}: {error.strerror or error}; choose another --out '
                        'or check the folder\'s permissions') from None


# The networks an exported landmark model may name beside it: metadata key -> what it does (for
# messages) and the file suffix export_onnx.py gives it (<stem><suffix> beside <stem>.onnx).
COMPANION_MODELS = {'framing_model': ('finds faces with', '.framing.onnx'),
                    'refine_model': ('refines landmarks with', '.refine.onnx')}


def companion_file(out: str, key: str) -> str:
    """Where export_onnx.py writes the companion `key` of `out`: <stem><suffix> beside it."""
    return os.path.splitext(out)[0] + COMPANION_MODELS[key][1]


def companion_model_path(metadata: dict, key: str, source: str) -> Optional[str]:
    """The companion model (`key` of COMPANION_MODELS) an exported .onnx names in its metadata: a
    file beside it, or None.

    Only a plain file name ending in .onnx is followed (metadata is data from whoever made the
    file, so no paths elsewhere).
    """
    import json
    if key not in metadata:
        return None
    try:
        name = json.loads(metadata[key])
    except (ValueError, RecursionError):
        name = None
    if not isinstance(name, str) or os.path.basename(name) != name or name in ('.', '..') \
            or not name.lower().endswith('.onnx'):
        raise UserError(f'{source}: its metadata {key} is not a file name ending in '
                        '.onnx; export it again with export_onnx.py')
    path = os.path.join(os.path.dirname(os.path.abspath(source)), name)
    if not os.path.isfile(path):
        raise UserError(f'{source} {COMPANION_MODELS[key][0]} {name}, which is not beside it; '
                        f'keep the files export_onnx.py wrote together (or export again)')
    return path
