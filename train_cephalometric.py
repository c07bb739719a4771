"""Train the cephalometric landmark model with MMPose/MMEngine.

    python train_cephalometric.py                       # data/cephalometric -> work_dirs/cephalometric
    python train_cephalometric.py --epochs 50 --batch-size 16 --lr 5e-4
    python train_cephalometric.py --resume              # continue an interrupted run
    torchrun --nproc_per_node 4 train_cephalometric.py --launcher pytorch   # 4 GPUs

Logs MRE (and SDR, per-landmark MRE) after every epoch and keeps the best model by MRE at
<work-dir>/best_MRE.pth with best_MRE.json beside it. Everything else (model, augmentation,
schedule) is in cephalometric_hrnetv2_w18_config.py.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import pickle
import sys
import urllib.request

from mmengine.config import DictAction

from cephalometric.errors import UserError, run_cli

DEFAULT_CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), 'cephalometric_hrnetv2_w18_config.py')
DEFAULT_DATA_ROOT = 'data/cephalometric'
RESOLVED_CONFIG = 'resolved_config.py'


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help='MMPose config file (default: '
                        'cephalometric_hrnetv2_w18_config.py; with --resume: the run\'s own '
                        '<work-dir>/resolved_config.py)')
    parser.add_argument('--data-root', help='folder written by prepare_cephalometric_data.py '
                        f'(default: {DEFAULT_DATA_ROOT}; with --resume: the run\'s own)')
    parser.add_argument('--work-dir', default='work_dirs/cephalometric',
                        help='checkpoints, logs, best_MRE.pth and training_curves.png go here')
    parser.add_argument('--epochs', type=int, help='number of epochs (config: 100)')
    parser.add_argument('--batch-size', type=int, help='images per GPU/CPU step (config: 32)')
    parser.add_argument('--lr', type=float, help='Adam learning rate (config: 1e-3)')
    parser.add_argument('--input-size', type=int,
                        help='square model input in px, multiple of 32 (config: 256)')
    parser.add_argument('--sigma', type=float, help='heatmap Gaussian sigma (config: 2)')
    parser.add_argument('--workers', type=int, help='data-loading processes (config: 2)')
    parser.add_argument('--seed', type=int,
                        help='random seed (config: 0); also selects deterministic kernels')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: CUDA when available, else CPU')
    parser.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='distributed launcher for multi-GPU / multi-node runs')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the last checkpoint in --work-dir')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--no-pretrained', action='store_true',
                         help='start from random weights instead of the AFLW checkpoint')
    weights.add_argument('--load-from', metavar='PATH_OR_URL',
                         help='initial weights (default: the AFLW HRNetV2-W18 checkpoint)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config values, e.g. train_cfg.val_interval=2')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)  # set by torch.distributed.launch
    return parser.parse_args(argv)


def fetch_pretrained(url: str) -> str:
    """Path of the pretrained checkpoint in torch's cache, downloading it once.

    Failing here, with the two ways out, beats failing deep inside the Runner or silently
    training from scratch.
    """
    import torch
    cache = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(url))
    if osp.isfile(cache):
        return cache
    os.makedirs(osp.dirname(cache), exist_ok=True)
    temporary = f'{cache}.part-{os.getpid()}'
    print(f'downloading pretrained weights {url}', file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(temporary, 'wb') as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(temporary, cache)
    except Exception as error:  # no network, proxy, HTTP error, disk full
        if osp.exists(temporary):
            os.remove(temporary)
        reason = getattr(error, 'reason', None) or error
        raise UserError(f'cannot download the pretrained checkpoint {url} ({reason}); '
                        'download it yourself and pass --load-from PATH, or pass --no-pretrained '
                        'to train from random weights') from None
    return cache


def resolve_initial_weights(cfg, args) -> None:
    if args.resume:
        cfg.load_from = None  # the Runner resumes from <work_dir>/last_checkpoint
        return
    if args.no_pretrained:
        cfg.load_from = None
        print('note: training from random weights (--no-pretrained)', file=sys.stderr)
        return
    source = args.load_from or cfg.get('load_from')
    if not source:
        return
    if source.startswith(('http://', 'https://')):
        cfg.load_from = fetch_pretrained(source)
    elif not osp.isfile(source):
        raise UserError(f'--load-from file not found: {source}')
    else:
        cfg.load_from = source


def last_checkpoint(work_dir: str):
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as handle:
        path = handle.read().strip()
    return path if osp.isfile(path) else None


def build_config(args):
    """The config as this run uses it: file + prepared data + command-line options."""
    from mmengine.config import Config

    from cephalometric import config_utils

    # A resumed run continues with its own settings (epochs, input size, data...), not the
    # defaults, unless the command line overrides them.
    resolved = osp.join(args.work_dir, RESOLVED_CONFIG)
    own_settings = args.resume and args.config is None and osp.isfile(resolved)
    config_path = resolved if own_settings else (args.config or DEFAULT_CONFIG)
    if not osp.isfile(config_path):
        raise UserError(f'config not found: {config_path}')
    cfg = Config.fromfile(config_path)
    data_root = args.data_root or (cfg.data_root if own_settings else DEFAULT_DATA_ROOT)
    names = config_utils.set_data_root(cfg, data_root)
    cfg.work_dir = args.work_dir
    if args.input_size or args.sigma:
        config_utils.set_input_size(cfg, args.input_size or cfg.codec['input_size'][0], args.sigma)
    if args.epochs is not None:
        config_utils.set_epochs(cfg, args.epochs)
    if args.batch_size is not None:
        config_utils.set_batch_size(cfg, args.batch_size)
    if args.workers is not None:
        config_utils.set_workers(cfg, args.workers)
    if args.lr is not None:
        cfg.optim_wrapper.optimizer.lr = args.lr
    if args.seed is not None:
        cfg.randomness = dict(seed=args.seed)  # determinism itself: see make_deterministic
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.launcher = args.launcher
    cfg.resume = args.resume
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    resolve_initial_weights(cfg, args)
    return cfg, names, data_root


def make_deterministic() -> None:
    """Deterministic kernels where PyTorch has them, a warning where it has not.

    MMEngine's `deterministic=True` makes every non-deterministic op an error, and HRNet's bilinear
    upsampling has no deterministic CUDA backward, so --seed would crash on a GPU.
    """
    import torch
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # required by cuBLAS for determinism
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def select_device(device: str) -> None:
    # Must run before torch initialises CUDA: MMEngine picks CUDA whenever it is visible.
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''


def main(argv=None) -> int:
    args = parse_args(argv)
    select_device(args.device)
    import torch  # only after select_device

    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda but no CUDA GPU is visible; use --device cpu')
    if args.amp and not torch.cuda.is_available():
        raise UserError('--amp needs a CUDA GPU; drop --amp on CPU')
    if args.seed is not None:
        make_deterministic()
    if args.resume and last_checkpoint(args.work_dir) is None:
        raise UserError(f'nothing to resume in {args.work_dir} (no last_checkpoint); '
                        'run without --resume to start training')

    import cephalometric.mmcv_compat  # noqa: F401  (must precede mmpose)

    from mmengine.runner import Runner

    from cephalometric.checkpoint import resume_globals

    cfg, names, data_root = build_config(args)
    if args.resume:
        with resume_globals():
            checkpoint = torch.load(last_checkpoint(args.work_dir), map_location='cpu',
                                    weights_only=True)
        done = checkpoint.get('meta', {}).get('epoch', 0)
        if done >= cfg.train_cfg.max_epochs:
            print(f'training in {args.work_dir} already finished ({done} of '
                  f'{cfg.train_cfg.max_epochs} epochs); best model: '
                  f'{osp.join(args.work_dir, "best_MRE.pth")}. Pass a larger --epochs to continue.')
            return 0
        del checkpoint

    os.makedirs(args.work_dir, exist_ok=True)
    cfg.dump(osp.join(args.work_dir, RESOLVED_CONFIG))
    runner = Runner.from_cfg(cfg)
    runner.logger.info(f'{len(names)} landmarks: {", ".join(names)}')
    # The Runner loads the run's own epoch_N.pth (--resume) or the initial weights (load_from)
    # when training starts.
    try:
        with resume_globals():
            runner.train()
    except pickle.UnpicklingError as error:  # only checkpoint loading unpickles during training
        reason = str(error).strip().splitlines()[0] if str(error).strip() else 'unpickling failed'
        source = 'the last checkpoint' if args.resume else cfg.load_from
        raise UserError(f'cannot load {source} with torch.load(weights_only=True) ({reason}); '
                        'use a checkpoint from this project or OpenMMLab\'s model zoo') from None

    if runner.rank == 0:
        report_result(args.work_dir, data_root)
    return 0


def report_result(work_dir: str, data_root: str) -> None:
    import json

    from cephalometric.prepared import mean_shape_baseline

    best_json = osp.join(work_dir, 'best_MRE.json')
    if not osp.isfile(best_json):
        print(f'no validation result in {work_dir}')
        return
    with open(best_json) as handle:
        best = json.load(handle)
    baseline = mean_shape_baseline(data_root, 'val')
    mm = ''
    if 'MRE_mm' in best['metrics']:
        mm = f' = {best["metrics"]["MRE_mm"]:.2f} mm'
    print(f'validation MRE {best["best_score"]:.2f} px{mm} at epoch {best["epoch"]} '
          f'(mean-shape baseline: {baseline["MRE"]:.2f} px)')
    print(f'best checkpoint: {osp.join(work_dir, "best_MRE.pth")}')
    curves = osp.join(work_dir, 'training_curves.png')
    if osp.isfile(curves):
        print(f'training curves: {curves}')


if __name__ == '__main__':
    sys.exit(run_cli(main))
