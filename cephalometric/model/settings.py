"""What inference needs besides the weights, as plain data, and its validation.

The settings dict (landmark names, input size, box padding, normalisation, heatmap decoder) is
derived from a training config *as data* (a dict, never executed), travels inside checkpoints and
ONNX metadata, and is validated here before anything uses it, so a file from someone else with
impossible values gets one line instead of a crash. `check_model_config` limits a stored model
architecture to MMPose's registered model classes.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from cephalometric.errors import UserError
from cephalometric.model.shape_prior import MAX_SHAPE_LANDMARKS

SETTINGS_KEYS = ('landmark_names', 'input_size', 'bbox_padding', 'mean', 'std', 'decoder')
# Optional: absent in older files, which then get the defaults (RGB input; framing.FramingPrior()).
OPTIONAL_KEYS = ('inputs', 'framing_prior', 'error_calibration', 'face_check', 'refinement')
# What an error calibration scales into expected errors (`prediction.heatmaps.error_signal`): the
# landmark model's heatmap spread, that combined with how far the refinement model moved the
# point, or the refinement model's own uncertainty combined with that shift.
ERROR_SIGNALS = ('spread', 'spread_and_refine_shift', 'refine_uncertainty_and_shift')
# The error calibration's factor per measurement interval (`uncertainty.scaled_spread`): names as
# `measurements` writes them, and no more than it has.
MEASUREMENT_KEY = re.compile(r'[A-Za-z][A-Za-z0-9_]{0,47}')
MAX_INTERVAL_SCALES = 64
# Optional: what the model takes, in channel order; absent means ['rgb'] (all older files).
# ['rgb', 'depth'] is an RGB-D model: mean/std then have a fourth value, the depth channel's.
INPUT_KINDS = (['rgb'], ['rgb', 'depth'])
MAX_INPUT_SIDE = 4096
MAX_LANDMARKS = 1000
MAX_METADATA_CHARS = 1 << 20    # one settings value as JSON text; real ones are under 2 KB
MAX_METADATA_DEPTH = 8          # the settings nest three levels at most
MAX_PIXEL_STATISTIC = 1e4       # normalisation mean/std of 0..255 pixel values
MAX_PRIOR_VALUE = 100.0         # framing prior offsets and ratios, in landmark-box sizes
# The shape prior's precision matrix: inverse variances of unit-size shapes' coordinates, whose
# ridge (`shape_prior.RIDGE`) keeps them near 1e4-1e6.
MAX_SHAPE_PRECISION = 1e12


def _pipeline_step(config: Mapping, name: str) -> Mapping:
    pipeline = (config.get('test_dataloader') or {}).get('dataset', {}).get('pipeline') or []
    for step in pipeline:
        if isinstance(step, Mapping) and step.get('type') == name:
            return step
    return {}


def settings_from_config(config: Mapping, names: Sequence[str], source: str) -> dict:
    """The settings from a training config given as a plain dict (see the module docstring)."""
    try:
        model = config['model']
        decoder = dict(model['head']['decoder'])
        preprocessor = model['data_preprocessor']
        if decoder.get('type') != 'MSRAHeatmap':
            raise UserError(f'{source}: the model decodes {decoder.get("type")!r} heatmaps; only '
                            'MSRAHeatmap is supported')
        settings = {
            'landmark_names': list(names),
            'input_size': list(decoder['input_size']),  # (w, h)
            'bbox_padding': _pipeline_step(config, 'GetBBoxCenterScale').get('padding', 1.25),
            'mean': list(preprocessor['mean']),  # RGB order
            'std': list(preprocessor['std']),
            'inputs': ['rgb'],
            'decoder': {'heatmap_size': list(decoder['heatmap_size']),
                        'unbiased': decoder.get('unbiased', False),
                        'blur_kernel_size': decoder.get('blur_kernel_size', 11)},
        }
        if model.get('backbone', {}).get('in_channels', 3) == 4:   # RGB-D (cephalometric.rgbd)
            settings['inputs'] = ['rgb', 'depth']
            settings['mean'] = settings['mean'][:3] + [preprocessor['depth_mean']]
            settings['std'] = settings['std'][:3] + [preprocessor['depth_std']]
    except (KeyError, TypeError, AttributeError) as error:
        raise UserError(f'{source}: its stored config lacks {error}; pass a checkpoint written by '
                        'train_cephalometric.py') from None
    return validate_settings(settings, source)


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _size(value, low: int, high: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                    for v in value))


def validate_settings(settings: Any, source: str) -> dict:
    """`settings` checked and normalised; UserError naming the first impossible value."""
    def bad(what: str):
        return UserError(f'{source}: {what}; re-create the file with train_cephalometric.py or '
                         'export_onnx.py')

    if not isinstance(settings, Mapping):
        raise bad('model settings are not a mapping')
    missing = [key for key in SETTINGS_KEYS if key not in settings]
    if missing:
        raise bad(f'model settings lack {", ".join(missing)}')
    names = settings['landmark_names']
    if (not isinstance(names, (list, tuple)) or not names or len(names) > MAX_LANDMARKS
            or not all(isinstance(n, str) and n.strip() and len(n) <= 100 for n in names)
            or len(set(names)) != len(names)):
        raise bad(f'landmark_names must be a list of 1..{MAX_LANDMARKS} distinct names')
    if not _size(settings['input_size'], 8, MAX_INPUT_SIDE):
        raise bad(f'input_size must be two whole numbers 8..{MAX_INPUT_SIDE}, got '
                  f'{_shown(settings["input_size"])}')
    padding = settings['bbox_padding']
    if not _number(padding) or not 0.5 <= padding <= 10:
        raise bad(f'bbox_padding must be a number 0.5..10, got {_shown(padding)}')
    inputs = settings.get('inputs', ['rgb'])
    if inputs not in INPUT_KINDS:
        raise bad(f'inputs must be ["rgb"] or ["rgb", "depth"], got {_shown(inputs)}')
    channels = 3 + len(inputs) - 1
    for key in ('mean', 'std'):
        values = settings[key]
        if (not isinstance(values, (list, tuple)) or len(values) != channels
                or not all(_number(v) and abs(v) <= MAX_PIXEL_STATISTIC for v in values)):
            raise bad(f'{key} must be {channels} numbers within +-{MAX_PIXEL_STATISTIC:g}, got '
                      f'{_shown(values)}')
    if not all(v >= 1e-6 for v in settings['std']):
        raise bad(f'std must be positive, got {_shown(settings["std"])}')
    decoder = settings['decoder']
    if not isinstance(decoder, Mapping):
        raise bad('decoder must be a mapping')
    heatmap = decoder.get('heatmap_size')
    if not _size(heatmap, 1, MAX_INPUT_SIDE) or any(
            h > i for h, i in zip(heatmap, settings['input_size'])):
        raise bad(f'decoder heatmap_size must be two whole numbers no larger than input_size, '
                  f'got {_shown(heatmap)}')
    kernel = decoder.get('blur_kernel_size', 11)
    if not isinstance(kernel, int) or isinstance(kernel, bool) or not (
            1 <= kernel <= 99 and kernel % 2):
        raise bad('decoder blur_kernel_size must be an odd whole number 1..99, got '
                  f'{_shown(kernel)}')
    if not isinstance(decoder.get('unbiased', False), bool):
        raise bad('decoder unbiased must be true or false')
    prior = settings.get('framing_prior')
    if prior is not None:
        if not isinstance(prior, Mapping) or not all(
                isinstance(prior.get(key), (list, tuple)) and len(prior[key]) == 2
                and all(_number(v) and abs(v) <= MAX_PRIOR_VALUE for v in prior[key])
                for key in ('offset', 'ratio')) or not all(v > 0 for v in prior['ratio']):
            raise bad(f'framing_prior must be {{"offset": [x, y], "ratio": [w, h]}} with '
                      f'numbers within +-{MAX_PRIOR_VALUE:g} and positive ratios, got '
                      f'{_shown(prior)}')
        facing = prior.get('facing')
        # (x offsets from the landmark box's centre, as shares of its width: within +-0.5)
        if facing is not None and not (
                isinstance(facing, (list, tuple)) and len(facing) == len(names)
                and all(_number(v) and abs(v) <= 1 for v in facing) and any(facing)):
            raise bad(f'framing_prior facing must be {len(names)} numbers within +-1, not all '
                      f'zero, got {_shown(facing)}')
        prior = {'offset': [float(v) for v in prior['offset']],
                 'ratio': [float(v) for v in prior['ratio']],
                 **({} if facing is None else {'facing': [float(v) for v in facing]})}
    calibration = settings.get('error_calibration')
    if calibration is not None:
        calibration = _error_calibration(calibration, len(names), bad)
    face_check = settings.get('face_check')
    if face_check is not None:
        face_check = _face_check(face_check, bad)
    refinement = settings.get('refinement')
    if refinement is not None:
        refinement = _refinement(refinement, bad)
    return {'landmark_names': list(names), 'input_size': list(settings['input_size']),
            'bbox_padding': float(padding), 'mean': [float(v) for v in settings['mean']],
            'std': [float(v) for v in settings['std']],
            **({'inputs': list(inputs)} if inputs != ['rgb'] else {}),
            **({'framing_prior': prior} if prior is not None else {}),
            **({'error_calibration': calibration} if calibration is not None else {}),
            **({'face_check': face_check} if face_check is not None else {}),
            **({'refinement': refinement} if refinement is not None else {}),
            'decoder': {'heatmap_size': list(heatmap), 'unbiased': decoder.get('unbiased', False),
                        'blur_kernel_size': kernel}}


def _error_calibration(calibration: Any, count: int, bad) -> dict:
    """The stored error calibration (how heatmap spread becomes an expected error and a 90% radius,
    per landmark, measured on the validation split after training), checked."""
    keys = ('expected_per_spread', 'radius90_per_spread')
    if not isinstance(calibration, Mapping) or not all(
            isinstance(calibration.get(key), (list, tuple)) and len(calibration[key]) == count
            and all(_number(v) and 0 < v <= MAX_PRIOR_VALUE for v in calibration[key])
            for key in keys):
        raise bad(f'error_calibration must hold {count} positive numbers up to '
                  f'{MAX_PRIOR_VALUE:g} for each of {", ".join(keys)}')
    images = calibration.get('images', 0)
    if not isinstance(images, int) or isinstance(images, bool) or images < 0:
        raise bad('error_calibration images must be a whole number')
    signal = calibration.get('signal', ERROR_SIGNALS[0])   # calibrated before it was named
    if signal not in ERROR_SIGNALS:
        raise bad(f'error_calibration signal must be one of {", ".join(ERROR_SIGNALS)}, got '
                  f'{str(signal)[:40]!r}')
    checked = {**{key: [float(v) for v in calibration[key]] for key in keys}, 'images': images,
               'split': str(calibration.get('split', 'val'))[:20], 'signal': signal}
    scale = calibration.get('interval_scale')   # absent in calibrations before it existed
    if scale is not None:
        if not isinstance(scale, Mapping) or len(scale) > MAX_INTERVAL_SCALES or not all(
                isinstance(k, str) and MEASUREMENT_KEY.fullmatch(k) and _number(v)
                and 0 < v <= MAX_PRIOR_VALUE for k, v in scale.items()):
            raise bad(f'error_calibration interval_scale must map up to {MAX_INTERVAL_SCALES} '
                      f'measurement names to positive numbers up to {MAX_PRIOR_VALUE:g}')
        checked['interval_scale'] = {k: float(v) for k, v in scale.items()}
    shape = calibration.get('shape')   # absent in calibrations before it existed
    if shape is not None:
        checked['shape'] = _shape_prior(shape, count, bad)
    return checked


def _numbers(values: Any, count: int, limit: float) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == count
            and all(_number(v) and abs(v) <= limit for v in values))


def _shape_prior(shape: Any, count: int, bad) -> dict:
    """The error calibration's shape prior (`model.shape_prior`) and its weight, checked: a
    unit-size mean shape, the aligned shapes' mean and precision matrix."""
    size = 2 * count
    if not isinstance(shape, Mapping) or not (
            _number(shape.get('weight')) and 0 < shape['weight'] <= MAX_PRIOR_VALUE
            and count <= MAX_SHAPE_LANDMARKS
            and isinstance(shape.get('reference'), (list, tuple))
            and len(shape['reference']) == count
            and all(_numbers(point, 2, 10.0) for point in shape['reference'])
            and _numbers(shape.get('mean'), size, 10.0)
            and isinstance(shape.get('precision'), (list, tuple))
            and len(shape['precision']) == size
            and all(_numbers(row, size, MAX_SHAPE_PRECISION) for row in shape['precision'])):
        raise bad(f'error_calibration shape must hold a weight up to {MAX_PRIOR_VALUE:g}, a '
                  f'reference of {count} points, a mean of {size} numbers and a {size} x {size} '
                  f'precision matrix (at most {MAX_SHAPE_LANDMARKS} landmarks)')
    return {'weight': float(shape['weight']),
            'reference': [[float(v) for v in point] for point in shape['reference']],
            'mean': [float(v) for v in shape['mean']],
            'precision': [[float(v) for v in row] for row in shape['precision']]}


def _face_check(face_check: Any, bad) -> dict:
    """The stored face check (what a correctly framed face gives on the validation crops: the
    landmark model's lowest mean confidence, and the largest disagreement of the framing and the
    landmark model as a share of the box width), checked."""
    if not isinstance(face_check, Mapping) or not (
            _number(face_check.get('landmark_score_floor'))
            and 0 <= face_check['landmark_score_floor'] <= 1
            and _number(face_check.get('disagreement_ceiling'))
            and 0 < face_check['disagreement_ceiling'] <= 10):
        raise bad('face_check must hold landmark_score_floor 0..1 and disagreement_ceiling '
                  '0..10 (exclusive of 0)')
    images = face_check.get('images', 0)
    if not isinstance(images, int) or isinstance(images, bool) or images < 0:
        raise bad('face_check images must be a whole number')
    # optional (checkpoints calibrated before it have none): the framing model's highest mean
    # confidence on a mirrored validation face
    ceiling = face_check.get('mirrored_score_ceiling')
    if ceiling is not None and not (_number(ceiling) and 0 <= ceiling <= 1):
        raise bad('face_check mirrored_score_ceiling must be a number 0..1')
    # optional (checkpoints calibrated before them have none): the validation faces' medians,
    # for the joint check (framing.JOINT_MARGIN)
    medians = {key: face_check[key] for key in ('landmark_score_median', 'disagreement_median')
               if face_check.get(key) is not None}
    if medians and not (
            len(medians) == 2 and all(_number(v) for v in medians.values())
            and face_check['landmark_score_floor'] <= medians['landmark_score_median'] <= 1
            and 0 <= medians['disagreement_median'] <= face_check['disagreement_ceiling']):
        raise bad('face_check landmark_score_median and disagreement_median must both be given, '
                  'within landmark_score_floor..1 and 0..disagreement_ceiling')
    return {'landmark_score_floor': float(face_check['landmark_score_floor']),
            'disagreement_ceiling': float(face_check['disagreement_ceiling']), 'images': images,
            **({} if ceiling is None else {'mirrored_score_ceiling': float(ceiling)}),
            **{key: float(value) for key, value in medians.items()}}


def _refinement(refinement: Any, bad) -> dict:
    """The refinement model's settings (its patch input size, the patch side as a share of the
    padded face box's longer side, its heatmap decoding; how it was trained), checked."""
    if not isinstance(refinement, Mapping):
        raise bad('refinement must be a mapping')
    size, patch = refinement.get('input_size'), refinement.get('patch')
    if not _size(size, 32, 1024) or size[0] != size[1] or size[0] % 32:
        raise bad(f'refinement input_size must be a square multiple of 32 up to 1024, got '
                  f'{_shown(size)}')
    if not _number(patch) or not 0 < patch <= 1:
        raise bad(f'refinement patch must be a share 0..1 of the face box, got {_shown(patch)}')
    decoder = refinement.get('decoder')
    kernel = decoder.get('blur_kernel_size', 11) if isinstance(decoder, Mapping) else None
    if not isinstance(kernel, int) or isinstance(kernel, bool) or not (
            1 <= kernel <= 99 and kernel % 2) or not isinstance(
            decoder.get('unbiased', False), bool):
        raise bad('refinement decoder must hold unbiased (true or false) and an odd '
                  'blur_kernel_size 1..99')
    info = {key: float(refinement[key]) for key in ('jitter', 'patch_errors', 'validation_mre',
                                                    'val_mre_refined', 'val_mre_coarse')
            if _number(refinement.get(key))}
    return {'input_size': list(size), 'patch': float(patch),
            'decoder': {'unbiased': decoder.get('unbiased', False), 'blur_kernel_size': kernel},
            **info}


def check_model_config(model: Any, allowed_types, source: str) -> dict:
    """A copy of a stored model architecture whose every `type` is a plain registered name.

    Registries turn a dotted `type` into an import (`subprocess.run`), so only names in
    `allowed_types` (MMPose's model and codec registries) pass. `init_cfg` entries are dropped:
    the weights come from the checkpoint, and a `Pretrained` entry would download a file.
    """
    def walk(node, where):
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                if key == 'init_cfg':
                    continue
                if key == 'type':
                    if not isinstance(value, str) or value not in allowed_types:
                        raise UserError(f'{source}: its model config names {value!r} at {where}, '
                                        'which is not an MMPose model class; re-create the file '
                                        'with train_cephalometric.py')
                out[str(key)] = walk(value, f'{where}.{key}')
            return out
        if isinstance(node, (list, tuple)):
            return [walk(v, f'{where}[{i}]') for i, v in enumerate(node)]
        if node is None or isinstance(node, (str, bool, int, float)):
            return node
        raise UserError(f'{source}: its model config holds a {type(node).__name__} at {where}; '
                        're-create the file with train_cephalometric.py')

    if not isinstance(model, Mapping) or 'type' not in model:
        raise UserError(f'{source}: no model architecture in its metadata; pass a checkpoint '
                        'written by train_cephalometric.py')
    return walk(model, 'model')


def refine_settings(settings: Mapping) -> dict | None:
    """The settings as the refinement model sees them (its patch input size and decoding), for
    exporting and checking its network; None without a refinement model."""
    refinement = settings.get('refinement')
    if refinement is None:
        return None
    size = list(refinement['input_size'])
    return dict(settings, input_size=size,
                decoder=dict(refinement['decoder'], heatmap_size=[side // 4 for side in size]))


def settings_to_metadata(settings: Mapping) -> dict:
    """The settings as ONNX metadata_props: one JSON string per key."""
    import json
    return {key: json.dumps(settings[key]) for key in SETTINGS_KEYS + OPTIONAL_KEYS
            if key in settings}


def settings_from_metadata(metadata: Mapping[str, str], source: str) -> dict:
    """Settings back from ONNX metadata_props; one-line UserError for missing or bad values.

    Each value is read as bounded JSON (`json_data.parse_json`: length, nesting depth, integer
    digits, no NaN/Infinity) before it is validated."""
    from cephalometric.json_data import parse_json
    missing = [key for key in SETTINGS_KEYS if key not in metadata]
    if missing:
        raise UserError(f'{source} lacks {", ".join(missing)} in its metadata; export it with '
                        'export_onnx.py')
    settings = {}
    for key in SETTINGS_KEYS + OPTIONAL_KEYS:
        if key not in metadata:
            continue
        text = metadata[key]
        try:
            if not isinstance(text, str) or len(text) > MAX_METADATA_CHARS:
                raise ValueError(f'longer than {MAX_METADATA_CHARS} characters')
            settings[key] = parse_json(text, max_depth=MAX_METADATA_DEPTH)
        except (ValueError, RecursionError, MemoryError) as error:
            reason = str(error).splitlines()[0][:100] if str(error) else 'not JSON'
            raise UserError(f'{source}: its metadata {key!r} is not JSON ({reason}); export it '
                            'again with export_onnx.py') from None
    return validate_settings(settings, source)
