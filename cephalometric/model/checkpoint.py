"""Loading and writing this project's checkpoints on torch >= 2.6.

torch.load now defaults to weights_only=True, which refuses the numpy objects MMEngine keeps in a
checkpoint's metadata (`numpy.core.multiarray._reconstruct`, dtypes), so inference and `--resume`
failed with UnpicklingError. We allow-list exactly those harmless types instead of turning the
check off.

Training checkpoints (epoch_N.pth, for --resume) also hold MMEngine's message hub, whose history
buffers pickle bound methods through `getattr`. Allowing `getattr` would let a crafted file run
code, so it is allowed only inside `resume_globals()`, which train_cephalometric.py uses for the
run's own work dir. The published model, best_MRE.pth, holds just weights and metadata and loads
with the strict list: that is the file to share and to give to inference.py.

The training config travels as data (`meta['config']`, a plain dict, plus `meta['inference']`, the
settings prediction needs), never as Python text: loading executes nothing. Checkpoints from older
versions stored the config as Python text (`meta['cfg']`); it is read only when `ast` shows it to
be plain literal assignments, and refused with one line otherwise. The stored model architecture
may name only MMPose's registered model classes (see `model.settings.check_model_config`).

The inference settings also carry the training data's framing prior (`framing`), so inference
can find the face in a wider photograph the way the training crops framed it. The framing model,
a second copy of the network fine-tuned for finding faces (see the config's `framing_model`), is
stored beside the landmark model's weights as `framing_state_dict` once it has trained; the
refinement model (see the config's `refine_model`), which re-locates each landmark on a patch, as
`refine_state_dict`, with its settings in the inference settings (`refinement`). Both share the
landmark model's architecture.
"""
from __future__ import annotations

import ast
import contextlib
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from cephalometric.atomic import atomic_path
from cephalometric.errors import UserError, first_line
from cephalometric.model.framing_prior import framing_prior_of
from cephalometric.model.settings import check_model_config, settings_from_config, validate_settings

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


# The only attribute lookups MMEngine's resume state pickles: HistoryBuffer's statistics methods.
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_method(owner, name):
    """Stands in for `getattr` while loading: a general getattr reaches `exec` in two steps."""
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'getattr of {name!r} on {type(owner).__name__} is not '
                                 'something a training checkpoint holds')


@contextlib.contextmanager
def resume_globals():
    """Also allow what MMEngine's resume state needs, for the run's own training checkpoints."""
    from mmengine.logging import HistoryBuffer
    allow_checkpoint_globals()
    with torch.serialization.safe_globals(
            [HistoryBuffer, (_history_buffer_method, 'builtins.getattr')]):
        yield


def _load_failure(path: str, error: Exception) -> str:
    """One line for a checkpoint torch.load refused, never PyTorch's advice to turn the check off
    (weights_only=False is exactly the unsafe path)."""
    message = str(error).strip()
    if 'Weights only load failed' in message or 'Unsupported global' in message:
        reason = 'unknown content'
        for line in message.splitlines()[1:]:
            line = line.split('WeightsUnpickler error:')[-1].strip()
            if line and 'weights_only' not in line and 'torch.load' not in line:
                reason = line.split(' was not an allowed global')[0].rstrip('.')[:160]
                break
        return (f'cannot read checkpoint {path}: it holds something this project never writes '
                f'({reason}); a file from an unknown source may carry code, so it is refused. '
                'Pass best_MRE.pth from train_cephalometric.py')
    reason = first_line(error, limit=160)
    return (f'cannot read checkpoint {path} ({reason}); pass best_MRE.pth from '
            'train_cephalometric.py')


def load_checkpoint_file(path: str, map_location: Any = 'cpu', training: bool = False) -> dict:
    """torch.load a published checkpoint (best_MRE.pth), or with `training` one of a work
    dir's resume checkpoints (epoch_N.pth); UserError with one line on failure."""
    if not os.path.isfile(path):
        raise UserError(f'checkpoint not found: {path}; pass the .pth written by training, '
                        'e.g. work_dirs/cephalometric/best_MRE.pth')
    allow_checkpoint_globals()
    try:
        with warnings.catch_warnings(), \
                (resume_globals() if training else contextlib.nullcontext()):
            warnings.simplefilter('ignore')   # e.g. 'Detected pickle protocol 4': not for users
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file, not a checkpoint, unknown pickled type
        raise UserError(_load_failure(path, error)) from None
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise UserError(f'{path} is not an MMEngine checkpoint (no state_dict); '
                        'pass best_MRE.pth from train_cephalometric.py')
    return checkpoint


# -- the model's config as data --------------------------------------------------------------------

def plain_data(value: Any) -> Any:
    """A config value as JSON-able data (dicts, lists, str, numbers, bool, None); others as text."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


def _literal(node: ast.AST, tuples: bool = False) -> Any:
    """Value of a literal expression or dict(k=literal, ...) call; ValueError for anything else.
    Tuples become lists unless `tuples`."""
    if isinstance(node, ast.Call):
        if (isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args
                and all(k.arg is not None for k in node.keywords)):
            return {k.arg: _literal(k.value, tuples) for k in node.keywords}
        raise ValueError('a function call')
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        values = [_literal(e, tuples) for e in node.elts]
        return tuple(values) if tuples and isinstance(node, ast.Tuple) else values
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError('dict unpacking')
        return {_literal(k, tuples): _literal(v, tuples) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)   # constants, signed numbers; ValueError otherwise


def literal_config(text: str, tuples: bool = False) -> dict:
    """Parse the Python config text older checkpoints stored, without executing any of it.

    Accepted only when every statement is `name = <literal>` (numbers, strings, lists, tuples,
    dicts and `dict(...)` of those), which is how MMEngine's pretty_text writes a config;
    anything else (a call, an import, an attribute) raises ValueError.
    """
    tree = ast.parse(text, mode='exec')
    config = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ValueError(f'line {statement.lineno} is not a plain assignment')
        try:
            config[statement.targets[0].id] = _literal(statement.value, tuples)
        except (ValueError, TypeError, SyntaxError, RecursionError) as error:
            raise ValueError(f'line {statement.lineno} holds {error or "code"}') from None
    return config


def stored_config(meta: dict, path: str) -> dict:
    """The training config a published checkpoint carries, as a dict; nothing is executed."""
    config = meta.get('config')
    if isinstance(config, dict):
        return config
    text = meta.get('cfg')
    if isinstance(text, str):  # written before configs were stored as data
        try:
            return literal_config(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError) as error:
            raise UserError(f'{path} stores its config as Python code that is not plain data '
                            f'({first_line(error)}), which is never executed; re-create '
                            'the checkpoint with this version of train_cephalometric.py') from None
    raise UserError(f'{path} has no config in its metadata; pass a checkpoint written by '
                    'train_cephalometric.py')


def model_registry_types() -> set:
    """Names of MMPose's registered model and codec classes (what a stored model may name)."""
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from mmpose.registry import KEYPOINT_CODECS, MODELS
    from mmpose.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    import cephalometric.mmpose_plugins.rgbd  # noqa: F401  (registers RGBDDataPreprocessor, RGB-D models)
    names = set()
    for registry in (MODELS, KEYPOINT_CODECS):
        while registry is not None:
            names.update(registry.module_dict)
            names.update(n for child in registry.children.values() for n in child.module_dict)
            registry = registry.parent
    return names


@dataclass
class PublishedModel:
    """What best_MRE.pth holds for prediction, checked.

    All networks share `model_config`; checkpoints written before the framing or the refinement
    model existed, or trained with --framing-epochs 0 / --refine-epochs 0, lack their weights
    (None).
    """
    model_config: dict                 # the architecture (MMPose model dict, init_cfg dropped)
    settings: dict                     # inference settings (landmark names, input size, ...)
    state_dict: dict                   # the landmark model's weights
    framing_state_dict: Optional[dict] = None   # the framing model's weights
    refine_state_dict: Optional[dict] = None    # the refinement model's weights


# The networks a published checkpoint may hold beside the landmark model's, by their key.
COMPANION_STATES = ('framing_state_dict', 'refine_state_dict')


def load_published(path: str, map_location: Any = 'cpu') -> PublishedModel:
    """The checked contents of a published checkpoint (best_MRE.pth)."""
    data = load_checkpoint_file(path, map_location)
    companions = companion_states(data)
    for key, state in companions.items():
        if not isinstance(state, dict) or not all(
                isinstance(value, torch.Tensor) for value in state.values()):
            raise UserError(f'{path}: its {key} is not a dict of tensors; pass a checkpoint '
                            'written by train_cephalometric.py')
    model = _published_model(data, path)
    if (companions.get('refine_state_dict') is None) != ('refinement' not in model[1]):
        raise UserError(f'{path}: it holds refinement weights without their settings, or the '
                        'other way round; pass a checkpoint written by train_cephalometric.py')
    return PublishedModel(*model, companions.get('framing_state_dict'),
                          companions.get('refine_state_dict'))


def companion_states(data: dict) -> dict:
    """The companion networks' weights a loaded checkpoint holds, by key."""
    return {key: data[key] for key in COMPANION_STATES if data.get(key) is not None}


def _published_model(data: dict, path: str) -> tuple[dict, dict, dict]:
    meta = data.get('meta') if isinstance(data.get('meta'), dict) else {}
    config = stored_config(meta, path)
    model = check_model_config(config.get('model'), model_registry_types(), path)
    settings = meta.get('inference')
    if settings is None:   # older checkpoints: derive them from the config and dataset_meta
        id2name = (meta.get('dataset_meta') or {}).get('keypoint_id2name')
        if not isinstance(id2name, dict) or not id2name:
            raise UserError(f'{path} has no landmark names in its metadata; pass a checkpoint '
                            'written by train_cephalometric.py')
        try:
            names = [id2name[i] for i in range(len(id2name))]
        except KeyError:
            raise UserError(f'{path}: its landmark names are not numbered 0..{len(id2name) - 1}; '
                            'pass a checkpoint written by train_cephalometric.py') from None
        return model, settings_from_config(config, names, path), data['state_dict']
    return model, validate_settings(settings, path), data['state_dict']


def published_meta(cfg, dataset_meta: dict, source: str = 'checkpoint') -> dict:
    """The data a published checkpoint carries: config as a dict, inference settings, landmarks.

    `cfg` is an MMEngine Config (or a plain dict); nothing in the result is code.
    """
    config = plain_data(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg))
    id2name = dataset_meta['keypoint_id2name']
    settings = settings_from_config(config, [id2name[i] for i in range(len(id2name))], source)
    return dict(config=config, inference=settings, dataset_meta=dataset_meta)


def write_published_checkpoint(path: str, meta: dict, state_dict: dict,
                               framing_state_dict: dict | None = None,
                               companions: dict | None = None) -> None:
    """torch.save weights + metadata to `path` atomically (weights moved to the CPU);
    `companions`: more networks' weights by their COMPANION_STATES key."""
    from collections import OrderedDict

    from mmengine.runner.checkpoint import weights_to_cpu

    def on_cpu(weights):   # weights_to_cpu keeps a state_dict's _metadata: an OrderedDict's
        return weights_to_cpu(weights if isinstance(weights, OrderedDict) else
                              OrderedDict(weights))
    data = dict(meta=meta, state_dict=on_cpu(state_dict))
    companions = dict(companions or {})
    if framing_state_dict is not None:
        companions['framing_state_dict'] = framing_state_dict
    for key, state in companions.items():
        if key not in COMPANION_STATES:
            raise ValueError(f'unknown companion network {key!r}')
        data[key] = on_cpu(state)
    with atomic_path(path) as temporary:
        torch.save(data, temporary)


def attach_framing_model(path: str, framing_state_dict: dict, info: dict,
                         facing: Optional[list] = None) -> None:
    """Store the framing model's weights in the published checkpoint `path` (atomically), with
    `info` (how it was trained) as meta['framing_model']. `facing`: the training faces'
    `FramingPrior.facing`, for a framing model trained on both directions (None: one direction;
    any earlier one is dropped)."""
    data = load_checkpoint_file(path)
    meta = dict(data.get('meta') or {}, framing_model=plain_data(info))
    inference = dict(meta.get('inference') or {})
    prior = {key: value for key, value in (inference.get('framing_prior') or {}).items()
             if key != 'facing'}
    if facing is not None:
        prior['facing'] = [float(v) for v in facing]
    if prior:
        inference['framing_prior'] = prior
        meta['inference'] = validate_settings(inference, path)
    write_published_checkpoint(path, meta, data['state_dict'],
                               companions=dict(companion_states(data),
                                               framing_state_dict=framing_state_dict))


def attach_refine_model(path: str, refine_state_dict: dict, settings: dict, info: dict) -> None:
    """Store the refinement model's weights in the published checkpoint `path` (atomically), its
    `settings` as the inference settings' `refinement` (checked) and `info` (how it was trained)
    as meta['refine_model']."""
    data = load_checkpoint_file(path)
    meta = dict(data.get('meta') or {}, refine_model=plain_data(info))
    inference = dict(meta.get('inference') or {}, refinement=plain_data(settings))
    meta['inference'] = validate_settings(inference, path)
    write_published_checkpoint(path, meta, data['state_dict'],
                               companions=dict(companion_states(data),
                                               refine_state_dict=refine_state_dict))


def set_error_calibration(path: str, calibration: dict, face_check: dict | None = None) -> None:
    """Store the error calibration (and the face check, when measured: both from
    `evaluation.calibration`) in the published checkpoint `path`, atomically, beside the other
    inference settings (checked as they are)."""
    data = load_checkpoint_file(path)
    meta = dict(data.get('meta') or {})
    measured = dict(error_calibration=calibration,
                    **({} if face_check is None else {'face_check': face_check}))
    inference = dict(meta.get('inference') or {}, **plain_data(measured))
    meta['inference'] = validate_settings(inference, path)
    write_published_checkpoint(path, meta, data['state_dict'], companions=companion_states(data))


def check_refine_model(path: str, with_refinement: float, without: float) -> bool:
    """Keep the refinement model of the published checkpoint `path` only if the validation MRE
    with it (`with_refinement`, px) is below the landmark model's alone (`without`): the figures
    go into its settings; otherwise its weights and settings are removed (atomically) and
    meta['refine_model'] says why. Returns whether it is kept."""
    data = load_checkpoint_file(path)
    meta = dict(data.get('meta') or {})
    inference = dict(meta.get('inference') or {})
    figures = dict(val_mre_refined=float(with_refinement), val_mre_coarse=float(without))
    kept = bool(with_refinement < without)
    companions = companion_states(data)
    if kept:
        inference['refinement'] = dict(inference['refinement'], **figures)
    else:
        inference.pop('refinement', None)
        companions.pop('refine_state_dict', None)
    meta['refine_model'] = dict(meta.get('refine_model') or {}, kept=kept, **figures)
    meta['inference'] = validate_settings(inference, path)
    write_published_checkpoint(path, meta, data['state_dict'], companions=companions)
    return kept


def save_published_checkpoint(runner, path: str, extra_meta: dict | None = None) -> None:
    """Write weights + metadata (config as data, inference settings, epoch) atomically to `path`.

    No optimizer, scheduler or message-hub state: a third of the size, and loadable with the strict
    allow-list. The config is stored as a plain dict (`meta['config']`), never as Python text.
    """
    import mmengine
    from mmengine.model import is_model_wrapper
    from mmengine.runner.checkpoint import get_state_dict

    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    dataset = runner.train_dataloader.dataset
    meta = published_meta(runner.cfg, dataset.metainfo, path)
    meta['inference']['framing_prior'] = framing_prior_of(dataset)
    meta.update(
        epoch=runner.epoch,
        iter=runner.iter,
        seed=runner.seed,
        experiment_name=runner.experiment_name,
        time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
        mmengine_version=mmengine.__version__)
    meta.update(extra_meta or {})
    write_published_checkpoint(path, meta, get_state_dict(model))
