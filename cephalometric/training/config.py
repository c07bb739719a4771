"""Fill in the parts of the MMPose config that depend on the prepared data and the command line.

Its job: point the data loaders at a prepared dataset and size the head for its landmarks, and map
--input-size, --sigma, --epochs, --framing-epochs, --batch-size and --workers onto every place of
the config that holds them; derive the framing model's run from the landmark model's. Used by
`training` (and by benchmark.py, through `training.build_config`).
"""
from __future__ import annotations

import math
import os.path as osp
from typing import Optional

from cephalometric.data.reader import read_inputs, read_landmark_names
from cephalometric.errors import UserError, first_line

# The config sits at the repository's top level, beside the scripts (cephalometric/training/..).
DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                          'cephalometric_hrnetv2_w18_config.py')
DEFAULT_DATA_ROOT = 'data/cephalometric'
DEFAULT_WORK_DIR = 'work_dirs/cephalometric'
RESOLVED_CONFIG = 'resolved_config.py'

# The config's named settings (its top block) and the option that changes each everywhere it is
# used; None: only by editing a --config.
NAMED_SETTINGS = {'max_epochs': '--epochs', 'base_lr': '--lr', 'warmup_iters': '--warmup-iters',
                  'train_batch_size': '--batch-size', 'val_batch_size': None,
                  'num_workers': '--workers', 'input_size': '--input-size',
                  'heatmap_size': '--input-size', 'sigma': '--sigma',
                  'framing_epochs': '--framing-epochs', 'refine_epochs': '--refine-epochs',
                  'refine_input_size': None}
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _loaders(cfg) -> list:
    """The data-loader dicts the config has, in DATALOADERS order."""
    return [cfg[name] for name in DATALOADERS if name in cfg]


def _codecs(cfg) -> list:
    """Every codec dict in the config (head decoder and GenerateTarget encoders)."""
    found = [cfg.model.head.decoder]
    for loader in _loaders(cfg):
        for step in loader.get('dataset', {}).get('pipeline', []):
            if step.get('type') == 'GenerateTarget':
                found.append(step['encoder'])
    return found


def set_input_size(cfg, size: int, sigma: Optional[float] = None) -> None:
    """Square model input of `size` px with stride-4 heatmaps, everywhere the config names it."""
    if size < 32 or size % 32:
        raise UserError(f'--input-size must be a positive multiple of 32 (HRNet downsamples by '
                        f'32), got {size}')
    if sigma is not None and not (math.isfinite(sigma) and 0 < sigma <= size / 8):
        raise UserError(f'--sigma must be a positive number of heatmap pixels up to {size // 8} '
                        f'(the config uses 2), got {sigma}')
    for codec in [cfg.codec] + _codecs(cfg):
        codec['input_size'] = (size, size)
        codec['heatmap_size'] = (size // 4, size // 4)
        if sigma is not None:
            codec['sigma'] = sigma
            codec['blur_kernel_size'] = dark_kernel_size(sigma)
    for loader in _loaders(cfg):
        for step in loader.dataset.pipeline:
            if step.get('type') == 'TopdownAffine':
                step['input_size'] = (size, size)


def dark_kernel_size(sigma: float) -> int:
    """DARK's heatmap blur for a target Gaussian of `sigma`, by MMPose's rule
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8 (sigma 2 -> 11, its default; 1.5 -> 7)."""
    return max(1, 2 * round((sigma - 0.8) / 0.3 + 1) + 1)


def set_data_root(cfg, data_root: str) -> list[str]:
    """Point all loaders at a prepared dataset and size the head for its landmarks.

    The landmark names come from the dataset's metainfo, read as data (never run); a folder that is
    not a prepared dataset is refused with one line.
    """
    names = read_landmark_names(data_root)
    root = osp.join(osp.abspath(data_root), '')
    cfg.data_root = root
    for loader in _loaders(cfg):
        loader.dataset.data_root = root
    cfg.num_keypoints = len(names)
    cfg.model.head.out_channels = len(names)
    inputs = read_inputs(data_root)
    if inputs != ['rgb']:   # RGB-D: 4-channel stem, depth in every pipeline (cephalometric.rgbd)
        from cephalometric.mmpose_plugins.rgbd import use_inputs
        use_inputs(cfg, inputs)
    return names


def set_epochs(cfg, epochs: int, scale_stages: bool = True) -> None:
    """Train for `epochs`, keeping the step-decay milestones at the same fractions of training
    and, with `scale_stages`, the later models' epochs (unless --framing-epochs etc. set them) in
    the same proportion. A later model's own run (a copy of the config) passes False: its copies
    of the stage sections must state what was trained."""
    if epochs < 1:
        raise UserError(f'--epochs must be at least 1, got {epochs}')
    old = cfg.train_cfg.max_epochs
    cfg.train_cfg.max_epochs = epochs
    for stage in STAGE_OPTIONS if scale_stages else ():
        if (cfg.get(stage) or {}).get('max_epochs'):
            cfg[stage].max_epochs = max(1, round(cfg[stage].max_epochs * epochs / old))
    for scheduler in cfg.param_scheduler:
        if scheduler.get('by_epoch', True) and scheduler['type'] == 'MultiStepLR':
            scheduler['end'] = epochs
            scheduler['milestones'] = sorted({max(1, round(m * epochs / old))
                                              for m in scheduler['milestones']})


def set_warmup_iters(cfg, iters: int) -> None:
    """Length of the linear learning-rate warm-up in iterations (0: none), by name instead of
    the scheduler's list index."""
    if iters < 0:
        raise UserError(f'--warmup-iters must be 0 or more, got {iters}')
    warmups = [s for s in cfg.param_scheduler
               if s['type'] == 'LinearLR' and not s.get('by_epoch', True)]
    if not warmups:
        raise UserError('--warmup-iters: this config has no per-iteration LinearLR warm-up in '
                        'param_scheduler; set the schedule in your --config')
    for scheduler in warmups:
        scheduler['end'] = max(iters, 1)
        if iters == 0:   # a one-iteration ramp from the full rate is no warm-up at all
            scheduler['start_factor'] = 1.0


def set_batch_size(cfg, batch_size: int) -> None:
    """Training images per step and per process."""
    if batch_size < 1:
        raise UserError(f'--batch-size must be at least 1, got {batch_size}')
    cfg.train_dataloader.batch_size = batch_size


def set_workers(cfg, workers: int) -> None:
    """Data-loading processes of every loader (0: load in the training process)."""
    if workers < 0:
        raise UserError(f'--workers must be 0 or more, got {workers}')
    for loader in _loaders(cfg):
        loader.num_workers = workers
        loader.persistent_workers = workers > 0


# The models trained after the landmark model: config section -> its option.
STAGE_OPTIONS = {'framing_model': '--framing-epochs', 'refine_model': '--refine-epochs'}


def set_stage_epochs(cfg, section: str, epochs: int) -> None:
    """Epochs of a later model's run (`section` of STAGE_OPTIONS; 0: that model is not trained)."""
    option = STAGE_OPTIONS[section]
    if epochs < 0:
        raise UserError(f'{option} must be 0 or more, got {epochs}')
    if epochs and not cfg.get(section):
        raise UserError(f'{option}: this config has no {section} section; add one (see '
                        f'cephalometric_hrnetv2_w18_config.py) or pass {option} 0')
    if cfg.get(section):
        cfg[section].max_epochs = epochs


def stage_epochs(cfg, section: str) -> int:
    """A later model's epochs in `cfg` (0 when it has none)."""
    return int((cfg.get(section) or {}).get('max_epochs', 0) or 0)


def framing_epochs(cfg) -> int:
    """The framing model's epochs (0: none; the landmark model then frames)."""
    return stage_epochs(cfg, 'framing_model')


def refine_epochs(cfg) -> int:
    """The refinement model's epochs (0: none; the landmark model's positions are final)."""
    return stage_epochs(cfg, 'refine_model')


# Bounds of the refinement patch, as a share of the padded face box's longer side: below, a
# patch holds too little to recognise a landmark; above, it is no finer than the landmark model.
REFINE_PATCH_RANGE = (0.04, 0.4)


def refine_patch(cfg, validation_mre: float, mean_box_side: float) -> tuple[float, float]:
    """(patch side, jitter), both as shares of the padded face box's longer side, from the
    landmark model's validation MRE in pixels and the mean padded box side in pixels.

    The side is `patch_errors` MREs; the jitter (per axis) is the standard deviation of a 2-D
    Gaussian error whose mean radius is the MRE (Rayleigh: mean = sigma * sqrt(pi / 2)).
    """
    low, high = REFINE_PATCH_RANGE
    side = float(cfg.refine_model.patch_errors) * validation_mre / mean_box_side
    side = min(max(side, low), high)
    jitter = validation_mre / math.sqrt(math.pi / 2) / mean_box_side / side
    return side, jitter


def refine_codec(cfg) -> dict:
    """The landmark codec at the refinement model's input size (stride 4, same sigma)."""
    size = int(cfg.refine_model.input_size)
    if size < 32 or size % 32:
        raise UserError(f'refine_model.input_size must be a positive multiple of 32 (HRNet '
                        f'downsamples by 32), got {size}')
    return dict(cfg.codec, input_size=(size, size), heatmap_size=(size // 4, size // 4))


def mean_box_side(cfg, data_root: str, split: str = 'val') -> float:
    """Mean longer side of the padded face boxes of a prepared split, in pixels (what
    GetBBoxCenterScale gives the landmark model)."""
    from cephalometric.data.reader import read_annotations
    coco = read_annotations(osp.join(data_root, 'annotations', f'{split}.json'), data_root)
    padding = next((step.get('padding', 1.25) for step in cfg.val_dataloader.dataset.pipeline
                    if step['type'] == 'GetBBoxCenterScale'), 1.25)
    sides = [max(ann['bbox'][2:4]) * padding for ann in coco['annotations']]
    return float(sum(sides) / max(len(sides), 1))


def refine_config(cfg, work_dir: str, validation_mre: float, mean_box_side: float):
    """The refinement model's run: the landmark run's config fine-tuning its best_MRE.pth on
    patches around each landmark (LandmarkPatch after GetBBoxCenterScale, at
    refine_model.input_size, no random shift: the patch's jitter is the shift) in
    <work_dir>/refine; None when there is no refinement model.

    Every training image gives `patches_per_image` patches per epoch (RepeatDataset), and a step
    takes that many times the landmark run's batch. There is no
    validation: the run is judged by the landmarks it refines, measured after training on the
    whole validation split; only RefineModelHook publishes, the last epoch's weights.
    """
    import copy
    epochs = refine_epochs(cfg)
    if not epochs:
        return None
    if not (math.isfinite(validation_mre) and validation_mre > 0):
        raise UserError(f'the refinement model needs the landmark model\'s validation MRE, got '
                        f'{validation_mre}; check the training log, or pass --refine-epochs 0')
    patch, jitter = refine_patch(cfg, validation_mre, mean_box_side)
    refine = copy.deepcopy(cfg)
    codec = refine_codec(cfg)
    size = codec['input_size']
    steps = refine.train_dataloader.dataset.pipeline
    for index, step in enumerate(list(steps)):
        if step['type'] == 'GetBBoxCenterScale':
            steps.insert(index + 1, dict(type='LandmarkPatch', patch=patch, jitter=jitter))
            break
    else:
        raise UserError('the refinement model needs GetBBoxCenterScale in the training '
                        'pipeline; add it, or pass --refine-epochs 0')
    for step in steps:
        if step['type'] == 'RandomBBoxTransform':
            step['shift_prob'] = 0.0
        elif step['type'] == 'TopdownAffine':
            step['input_size'] = size
        elif step['type'] == 'GenerateTarget':
            step['encoder'] = dict(codec)
    refine.model.head.decoder = dict(codec)
    patches = int(refine.refine_model.patches_per_image)
    refine.train_dataloader.dataset = dict(
        type='RepeatDataset', times=patches, dataset=refine.train_dataloader.dataset)
    # A step takes `patches` times the landmark run's batch (shuffled patches of any images), so
    # an epoch has the landmark run's number of steps: small patches in small batches leave a
    # CPU mostly idle (at 64 px a batch of 32 costs 0.56 of four batches of 8, measured) and a
    # GPU more so.
    refine.train_dataloader.batch_size = int(refine.train_dataloader.batch_size) * patches
    set_epochs(refine, epochs, scale_stages=False)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator'):
        refine[key] = None
    return _fine_tuning(refine, work_dir, 'refine', dict(
        type='RefineModelHook',
        settings=dict(input_size=list(size), patch=patch, jitter=jitter,
                      patch_errors=float(cfg.refine_model.patch_errors),
                      validation_mre=float(validation_mre),
                      decoder=dict(unbiased=bool(codec.get('unbiased', False)),
                                   blur_kernel_size=int(codec.get('blur_kernel_size', 11))))))


def framing_config(cfg, work_dir: str):
    """The framing model's run: the landmark run's config fine-tuning its best_MRE.pth for the
    framing epochs with zoom-out (and flips, when the config's `framing_model.flip` has a prob), in
    <work_dir>/framing; None when there is no framing model.

    Zoom-out goes right after the loading steps (LoadImage, and LoadDepth for RGB-D), so every
    input channel is zoomed together. Only FramingModelHook publishes: the run has no best_MRE.pth
    of its own.
    """
    import copy
    epochs = framing_epochs(cfg)
    if not epochs:
        return None
    framing = copy.deepcopy(cfg)
    steps = framing.train_dataloader.dataset.pipeline
    loading = [i for i, step in enumerate(steps) if step['type'] in ('LoadImage', 'LoadDepth')]
    steps.insert(max(loading, default=-1) + 1, dict(cfg.framing_model.zoom_out))
    if (cfg.framing_model.get('flip') or {}).get('prob', 0) > 0:
        # MMPose's place for it: after the box is read, before it is shifted and scaled
        boxed = [i for i, step in enumerate(steps) if step['type'] == 'GetBBoxCenterScale']
        steps.insert(max(boxed, default=len(steps) - 1) + 1, dict(cfg.framing_model.flip))
    set_epochs(framing, epochs, scale_stages=False)
    return _fine_tuning(framing, work_dir, 'framing', dict(type='FramingModelHook'))


def _fine_tuning(run, work_dir: str, folder: str, publisher: dict):
    """`run` (a copy of the landmark run's config) as a fine-tuning of the landmark run's
    best_MRE.pth in <work_dir>/<folder>, whose only publisher is the hook `publisher` (it stores
    the result back into that best_MRE.pth; the run has no best_MRE.pth of its own)."""
    landmark_checkpoint = osp.join(work_dir, 'best_MRE.pth')
    run.work_dir = osp.join(work_dir, folder)
    run.load_from = landmark_checkpoint
    run.custom_hooks = [hook for hook in run.get('custom_hooks', [])
                        if hook['type'] != 'BestCheckpointHook']
    run.custom_hooks.append(dict(publisher, checkpoint=landmark_checkpoint))
    return run


def check_cfg_options(cfg, options: dict) -> None:
    """Refuse an option whose key the config does not have, or whose value has the wrong type.

    MMEngine would add an unknown key silently and fail much later (a typo'd
    `train_dataloader.batchsize` becomes a DataLoader TypeError deep in training).
    """
    tree = cfg.to_dict()
    for key, value in options.items():
        if key in NAMED_SETTINGS and key in tree:
            instead = NAMED_SETTINGS[key]
            raise UserError(f'--cfg-options {key}: a named setting at the top of the config, read '
                            f'only when the file loads, so changing it here would change nothing; '
                            + (f'use {instead}' if instead else 'edit it in your own --config'))
        node = tree
        for depth, part in enumerate(key.split('.')):
            where = '.'.join(key.split('.')[:depth]) or 'the config'
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f'--cfg-options {key}: {where} is a list of {len(node)}; '
                                    f'use an index 0-{len(node) - 1}')
                node = node[int(part)]
            elif isinstance(node, dict):
                if part not in node:
                    known = ', '.join(sorted(str(k) for k in node)[:12])
                    raise UserError(f'--cfg-options {key}: {where} has no key {part!r} (it has: '
                                    f'{known}); check the spelling, or put new settings in your '
                                    'own --config')
                node = node[part]
            else:
                raise UserError(f'--cfg-options {key}: {where} is a value, not a dict')
        if isinstance(node, bool) or isinstance(value, bool):
            wrong = isinstance(node, bool) != isinstance(value, bool) and node is not None
        else:
            wrong = (isinstance(node, (int, float)) and not isinstance(value, (int, float))
                     and value is not None)
        if wrong:
            raise UserError(f'--cfg-options {key}={value!r}: the config holds '
                            f'{type(node).__name__} {node!r} there; give a value of that type')


MAX_RESOLVED_CONFIG_BYTES = 4 << 20   # a resolved config is ~10 kB; more is not one of ours


def read_resolved_config(path: str):
    """A work dir's resolved_config.py as an MMEngine Config, read as data, never executed.

    Accepted only as the plain `name = literal` assignments train_cephalometric.py writes, and
    importing only this package's modules (its `custom_imports`): a work dir may come from
    someone else, and a swapped file must not run anything.
    """
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    from cephalometric.model.checkpoint import literal_config
    hint = ('it is never executed; pass --config with the config you trained with to resume, '
            'or start a new --work-dir')
    try:
        if osp.getsize(path) > MAX_RESOLVED_CONFIG_BYTES:
            raise ValueError(f'over {MAX_RESOLVED_CONFIG_BYTES >> 20} MB')
        with open(path, encoding='utf-8') as stream:
            data = literal_config(stream.read(), tuples=True)
    except (OSError, UnicodeDecodeError, ValueError, SyntaxError, RecursionError,
            MemoryError) as error:
        raise UserError(f'{path} is not the plain data train_cephalometric.py writes '
                        f'({first_line(error, limit=120)}); {hint}') from None
    imports = data.get('custom_imports') or {}
    modules = imports.get('imports', []) if isinstance(imports, dict) else None
    if not isinstance(modules, list) or not all(
            isinstance(m, str) and m.split('.')[0] == 'cephalometric' for m in modules):
        raise UserError(f'{path} imports modules that are not this project\'s ({modules!r}); '
                        f'{hint}')
    import_modules_from_strings(modules, allow_failed_imports=False)
    return Config(data)


def build_config(args):
    """The config as this run uses it: file + prepared data + command-line options.

    Returns (config, landmark names, data root).
    """
    from mmengine.config import Config

    # A resumed run continues with its own settings (epochs, input size, data...), not the
    # defaults, unless the command line overrides them.
    resolved = osp.join(args.work_dir, RESOLVED_CONFIG)
    own_settings = args.resume and args.config is None and osp.isfile(resolved)
    config_path = resolved if own_settings else (args.config or DEFAULT_CONFIG)
    if not osp.isfile(config_path):
        raise UserError(f'config not found: {config_path}')
    # Only the --config a user passes is code; the work dir's own copy is read as data.
    cfg = read_resolved_config(resolved) if own_settings else Config.fromfile(config_path)
    data_root = args.data_root or (cfg.data_root if own_settings else DEFAULT_DATA_ROOT)
    names = set_data_root(cfg, data_root)
    cfg.work_dir = args.work_dir
    if args.input_size or args.sigma:
        set_input_size(cfg, args.input_size or cfg.codec['input_size'][0], args.sigma)
    if args.epochs is not None:
        set_epochs(cfg, args.epochs)
    if args.framing_epochs is not None:
        set_stage_epochs(cfg, 'framing_model', args.framing_epochs)
    if getattr(args, 'refine_epochs', None) is not None:
        set_stage_epochs(cfg, 'refine_model', args.refine_epochs)
    if args.warmup_iters is not None:
        set_warmup_iters(cfg, args.warmup_iters)
    if args.batch_size is not None:
        set_batch_size(cfg, args.batch_size)
    if args.workers is not None:
        set_workers(cfg, args.workers)
    if args.lr is not None:
        if not (math.isfinite(args.lr) and 0 < args.lr <= 1):
            raise UserError(f'--lr must be a positive number up to 1 (the config uses 1e-3), '
                            f'got {args.lr}')
        cfg.optim_wrapper.optimizer.lr = args.lr
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.seed is not None:
        # each process its own augmentation stream (seed + rank); determinism: make_deterministic
        cfg.randomness = dict(seed=args.seed, diff_rank_seed=True)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.launcher = args.launcher
    cfg.resume = args.resume
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        try:
            cfg.merge_from_dict(args.cfg_options)
        except Exception as error:  # MMEngine's own checks (e.g. a dict replaced by a list)
            raise UserError(f'--cfg-options cannot be applied ({error}); see the config file '
                            'for the keys and their types') from None
    if (framing_epochs(cfg) or refine_epochs(cfg)) and \
            cfg.train_cfg.get('val_interval', 1) > cfg.train_cfg.max_epochs:
        raise UserError(f'the framing and refinement models are fine-tuned from best_MRE.pth, '
                        f'which validation writes, but train_cfg.val_interval '
                        f'{cfg.train_cfg.val_interval} is more than the '
                        f'{cfg.train_cfg.max_epochs} epochs; lower it or pass --framing-epochs 0 '
                        '--refine-epochs 0')
    from cephalometric.training.weights import resolve_initial_weights
    resolve_initial_weights(cfg, args)
    return cfg, names, data_root


def random_weight_model(input_size: int, config: str = DEFAULT_CONFIG) -> tuple:
    """(config, dataset_meta, state_dict) of the project config's model for the standard 19
    landmarks with random weights (PyTorch's default initialisation, seed 0) at `input_size`:
    for timing (weights do not change it) and for tests."""
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    import torch
    from mmengine.config import Config
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.registry import MODELS
    from mmpose.utils import register_all_modules

    from cephalometric.data.writer import metainfo_dict
    from cephalometric.landmarks import STANDARD_LANDMARKS

    cfg = Config.fromfile(config)
    cfg.num_keypoints = cfg.model.head.out_channels = len(STANDARD_LANDMARKS)
    set_input_size(cfg, input_size)
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    return cfg, parse_pose_metainfo(metainfo_dict(STANDARD_LANDMARKS)), model.state_dict()
