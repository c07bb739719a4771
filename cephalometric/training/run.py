"""Training: the command line of train_cephalometric.py and everything it does before, around and
after MMEngine's Runner.

Its job: build the config this run uses (config file + prepared data + options, checked before any
work starts), find the initial weights (the pretrained download, --load-from, or the run's own last
checkpoint for --resume), set up one or several processes (`--launcher pytorch|slurm`, on GPUs with
nccl or on CPUs with gloo), make the work dir (and remove it again if this run made it and failed
before training began), train the landmark model, then the framing model (a copy fine-tuned with
zoom-out in <work_dir>/framing, stored in best_MRE.pth; see the config's `framing_model`), and
print the result. Multi-process runs follow MMEngine's rules: every process trains on its share of
each batch, rank 0 alone writes the outputs.

May import the standard library, torch, MMEngine/MMPose and this package's `errors`, `atomic`,
`checkpoint`, `config_utils` and `dataset_reader` (the config's `custom_imports` pull in `dataset`,
`metric` and `hooks`); nothing from the top-level scripts.
"""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import Optional, Sequence

from cephalometric.atomic import atomic_path, write_text_atomically
from cephalometric.errors import UserError

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                          'cephalometric_hrnetv2_w18_config.py')
DEFAULT_DATA_ROOT = 'data/cephalometric'
DEFAULT_WORK_DIR = 'work_dirs/cephalometric'
RESOLVED_CONFIG = 'resolved_config.py'
BACKEND_KEY = 'env_cfg.dist_cfg.backend'

DESCRIPTION = """\
Train the cephalometric landmark model (HRNetV2-W18, MMPose/MMEngine) on a prepared dataset.

    python train_cephalometric.py                       # data/cephalometric -> work_dirs/...
    python train_cephalometric.py --epochs 50 --batch-size 16 --lr 5e-4
    python train_cephalometric.py --resume              # continue an interrupted run
    torchrun --nproc_per_node 4 train_cephalometric.py --launcher pytorch   # 4 GPUs
    srun --ntasks 8 --gpus-per-task 1 python train_cephalometric.py --launcher slurm

Logs MRE (and SDR, per-landmark MRE) after every epoch and keeps the best model by MRE at
<work-dir>/best_MRE.pth with best_MRE.json beside it. Then fine-tunes a copy of that model with
zoomed-out crops for --framing-epochs (<work-dir>/framing/): the framing model, which finds the face
in wider or mirrored photographs at inference; it is stored in best_MRE.pth too. Everything else
(model, augmentation, schedule) is in cephalometric_hrnetv2_w18_config.py. With several
processes, --batch-size is per process and the distributed backend follows the device (nccl on
GPUs, gloo on CPUs) unless --cfg-options env_cfg.dist_cfg.backend=NAME says otherwise."""


def build_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help='MMPose config file (default: '
                        'cephalometric_hrnetv2_w18_config.py; with --resume: the run\'s own '
                        '<work-dir>/resolved_config.py)')
    parser.add_argument('--data-root', help='folder written by prepare_cephalometric_data.py '
                        f'(default: {DEFAULT_DATA_ROOT}; with --resume: the run\'s own)')
    parser.add_argument('--work-dir', default=DEFAULT_WORK_DIR,
                        help='checkpoints, logs, best_MRE.pth and training_curves.png go here')
    parser.add_argument('--epochs', type=int, help='number of epochs (config: 100)')
    parser.add_argument('--framing-epochs', type=int,
                        help='epochs of the framing model, fine-tuned from the landmark model '
                        'with zoom-out once it has trained (config: 30; 0: none, the landmark '
                        'model then finds faces itself)')
    parser.add_argument('--batch-size', type=int,
                        help='images per step and per process (GPU or CPU process; config: 32)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by (processes x batch size) / 32 '
                        '(MMEngine auto_scale_lr)')
    parser.add_argument('--lr', type=float, help='Adam learning rate (config: 1e-3)')
    parser.add_argument('--input-size', type=int,
                        help='square model input in px, multiple of 32 (config: 256)')
    parser.add_argument('--sigma', type=float, help='heatmap Gaussian sigma (config: 2)')
    parser.add_argument('--workers', type=int,
                        help='data-loading processes per training process (config: 2)')
    parser.add_argument('--seed', type=int, help='random seed (config: 0; process k uses seed+k '
                        'for augmentation); also selects deterministic kernels')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: CUDA when available, else CPU')
    parser.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='several processes: pytorch under torchrun, slurm under srun')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the last checkpoint in --work-dir')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--no-pretrained', action='store_true',
                         help='start from random weights instead of the AFLW checkpoint')
    weights.add_argument('--load-from', metavar='PATH_OR_URL',
                         help='initial weights (default: the AFLW HRNetV2-W18 checkpoint)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config values that exist in the config, e.g. '
                        'train_cfg.val_interval=2')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)  # set by the old torch.distributed.launch
    return parser


# -- initial weights ------------------------------------------------------------------------------
def fetch_pretrained(url: str) -> str:
    """Path of the pretrained checkpoint in torch's cache, downloading it once.

    Failing here, with the two ways out, beats failing deep inside the Runner or silently
    training from scratch.
    """
    import torch
    cache = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(url))
    if osp.isfile(cache):
        return cache
    print(f'downloading pretrained weights {url}', file=sys.stderr)
    try:
        with atomic_path(cache) as temporary, open(temporary, 'wb') as out, \
                urllib.request.urlopen(url, timeout=30) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except Exception as error:  # no network, proxy, HTTP error, disk full
        reason = getattr(error, 'reason', None) or error
        raise UserError(f'cannot download the pretrained checkpoint {url} ({reason}); '
                        'download it yourself and pass --load-from PATH, or pass --no-pretrained '
                        'to train from random weights') from None
    return cache


def check_weights_file(path: str) -> None:
    """Refuse, before any work, a --load-from that is not a checkpoint torch loads safely.

    The same loader as inference (weights_only=True with a narrow allow-list: nothing in the file
    runs); the Runner loads the file again when training starts.
    """
    from cephalometric.model.checkpoint import load_checkpoint_file

    if not osp.isfile(path):
        raise UserError(f'--load-from file not found: {path}; pass a .pth checkpoint, or '
                        '--no-pretrained to train from random weights')
    try:
        load_checkpoint_file(path)
    except UserError as error:
        raise UserError(f'--load-from: {error}') from None


def resolve_initial_weights(cfg, args) -> None:
    """Set cfg.load_from: the pretrained download, --load-from, or nothing (random / --resume)."""
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
        source = fetch_pretrained(source)
    check_weights_file(source)
    cfg.load_from = source


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint MMEngine's `last_checkpoint` pointer names, if it exists."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as handle:
        path = handle.read().strip()
    return path if osp.isfile(path) else None


# -- config ---------------------------------------------------------------------------------------
def check_cfg_options(cfg, options: dict) -> None:
    """Refuse an option whose key the config does not have, or whose value has the wrong type.

    MMEngine would add an unknown key silently and fail much later (a typo'd
    `train_dataloader.batchsize` becomes a DataLoader TypeError deep in training).
    """
    tree = cfg.to_dict()
    for key, value in options.items():
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


def build_config(args):
    """The config as this run uses it: file + prepared data + command-line options.

    Returns (config, landmark names, data root).
    """
    from mmengine.config import Config

    from cephalometric.training import config as config_utils

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
    if args.framing_epochs is not None:
        config_utils.set_framing_epochs(cfg, args.framing_epochs)
    if args.batch_size is not None:
        config_utils.set_batch_size(cfg, args.batch_size)
    if args.workers is not None:
        config_utils.set_workers(cfg, args.workers)
    if args.lr is not None:
        if not args.lr > 0:
            raise UserError(f'--lr must be positive, got {args.lr}')
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
    if config_utils.framing_epochs(cfg) and \
            cfg.train_cfg.get('val_interval', 1) > cfg.train_cfg.max_epochs:
        raise UserError(f'the framing model is fine-tuned from best_MRE.pth, which validation '
                        f'writes, but train_cfg.val_interval {cfg.train_cfg.val_interval} is more '
                        f'than the {cfg.train_cfg.max_epochs} epochs; lower it or pass '
                        '--framing-epochs 0')
    resolve_initial_weights(cfg, args)
    return cfg, names, data_root


def make_deterministic() -> None:
    """Deterministic kernels where PyTorch has them, a warning where it has not.

    MMEngine's `deterministic=True` makes every non-deterministic op an error, and HRNet's bilinear
    upsampling has no deterministic CUDA backward, so --seed would crash on a GPU.
    """
    import torch
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # cuBLAS needs it for determinism
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def select_device(device: str) -> None:
    """Hide CUDA for --device cpu; must run before torch initialises CUDA (MMEngine uses any
    visible GPU)."""
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''


# -- several processes ----------------------------------------------------------------------------
@dataclass
class Processes:
    """Where this process sits in a multi-process run (launcher 'none': one process)."""
    launcher: str = 'none'
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.launcher != 'none'


def _int_variable(name: str, launcher: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(f'--launcher {launcher}: {name}={value!r} is not a number; '
                        'start the run through its launcher') from None


def _slurm_master_address(node_list: str) -> str:
    """First host of a SLURM node list: via scontrol where it exists, else a plain host name."""
    if shutil.which('scontrol'):
        done = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True,
                              text=True)
        hosts = done.stdout.split()
        if done.returncode == 0 and hosts:
            return hosts[0]
    first = node_list.split(',')[0]
    if '[' in first or not first:
        raise UserError(f'--launcher slurm: cannot tell the first host of SLURM_NODELIST='
                        f'{node_list!r} without scontrol; set MASTER_ADDR to it')
    return first


def read_launcher(launcher: str) -> Processes:
    """The process layout from torchrun's or srun's variables; one line when they are missing.

    For slurm it also sets the variables torch.distributed reads (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT), as MMEngine does.
    """
    if launcher == 'none':
        world = os.environ.get('WORLD_SIZE', '1')
        if world.isdigit() and int(world) > 1:
            raise UserError(f'started by a launcher with WORLD_SIZE={world} but --launcher none: '
                            'every process would train alone into the same work dir; add '
                            '--launcher pytorch')
        return Processes()
    if launcher == 'pytorch':
        needed = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
        missing = [name for name in needed if name not in os.environ]
        if missing:
            raise UserError(f'--launcher pytorch needs the variables torchrun sets (missing '
                            f'{", ".join(missing)}); start it as torchrun --nproc_per_node N '
                            'train_cephalometric.py --launcher pytorch ..., or drop --launcher')
        die_with_launcher()
        world = _int_variable('WORLD_SIZE', launcher)
        local_world = int(os.environ.get('LOCAL_WORLD_SIZE', world))
        return Processes('pytorch', _int_variable('RANK', launcher),
                         _int_variable('LOCAL_RANK', launcher), world, local_world)
    needed = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
    missing = [name for name in needed if name not in os.environ]
    if missing:
        raise UserError(f'--launcher slurm needs the variables srun sets (missing '
                        f'{", ".join(missing)}); start it as srun --ntasks N python '
                        'train_cephalometric.py --launcher slurm ..., or drop --launcher')
    rank = _int_variable('SLURM_PROCID', launcher)
    world = _int_variable('SLURM_NTASKS', launcher)
    local_rank = _int_variable('SLURM_LOCALID', launcher) if 'SLURM_LOCALID' in os.environ else 0
    local_world = world
    tasks_per_node = os.environ.get('SLURM_NTASKS_PER_NODE', '').split('(')[0]
    if tasks_per_node.isdigit():
        local_world = int(tasks_per_node)
    address = os.environ.get('MASTER_ADDR') or _slurm_master_address(
        os.environ['SLURM_NODELIST'])
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(local_world), MASTER_ADDR=address,
                      MASTER_PORT=os.environ.get('MASTER_PORT', '29500'))
    return Processes('slurm', rank, local_rank, world, local_world)


def die_with_launcher() -> None:
    """Under torchrun (Linux): end this process when the launcher dies, even by SIGKILL.

    Otherwise `kill -9` of torchrun leaves its workers training on, and a `--resume` started next
    would race them for the same work dir.
    """
    if not sys.platform.startswith('linux') or 'TORCHELASTIC_RUN_ID' not in os.environ:
        return
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before prctl
        os.kill(os.getpid(), signal.SIGKILL)


def choose_backend(cfg, options: Optional[dict], use_cuda: bool) -> str:
    """nccl on GPUs, gloo on CPUs, unless --cfg-options env_cfg.dist_cfg.backend=NAME says so."""
    if options and BACKEND_KEY in options:
        backend = str(cfg.env_cfg.dist_cfg.backend)
        if backend == 'nccl' and not use_cuda:
            raise UserError(f'--cfg-options {BACKEND_KEY}=nccl needs CUDA GPUs, and this run is '
                            'on the CPU; drop the option (gloo is used on CPUs)')
        return backend
    return 'nccl' if use_cuda else 'gloo'


def start_processes(cfg, processes: Processes, backend: str, use_cuda: bool) -> None:
    """Join the process group ourselves: MMEngine's init_dist always calls torch.cuda.set_device,
    which fails on CPU processes. The Runner then finds the group started and uses it."""
    import torch
    import torch.distributed as dist

    cfg.env_cfg.dist_cfg.backend = backend  # resolved_config.py says what ran
    if use_cuda:
        if processes.local_rank >= torch.cuda.device_count():
            raise UserError(f'process {processes.rank} has local rank {processes.local_rank} '
                            f'but this node has {torch.cuda.device_count()} GPU(s); start at '
                            'most one process per GPU on each node')
        torch.cuda.set_device(processes.local_rank)
    else:
        # DDP on CPU modules takes no device_ids (MMEngine passes [LOCAL_RANK]).
        if not cfg.get('model_wrapper_cfg'):
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)
        if 'OMP_NUM_THREADS' not in os.environ:  # share the cores, do not oversubscribe them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes.local_world_size))
    timeout = cfg.env_cfg.dist_cfg.get('timeout')
    extra = {'timeout': datetime.timedelta(seconds=timeout)} if timeout else {}
    try:
        dist.init_process_group(backend=backend, init_method='env://', rank=processes.rank,
                                world_size=processes.world_size, **extra)
    except (RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f'cannot start the {backend} process group at '
                        f'{os.environ.get("MASTER_ADDR")}:{os.environ.get("MASTER_PORT")} '
                        f'({reason}); check the launcher, MASTER_ADDR/MASTER_PORT and the '
                        'backend') from None


def stop_processes(finished: bool) -> None:
    """Leave the process group; after a finished run only once every process has finished (one
    that leaves early can abort another still talking to it)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


# -- work dir -------------------------------------------------------------------------------------
def check_work_dir(work_dir: str) -> bool:
    """Refuse a work dir that cannot be written; returns whether it exists already.

    Tries it (a temporary file or folder, removed at once): permission bits say nothing for root
    or on a read-only file system.
    """
    import tempfile

    if osp.exists(work_dir) and not osp.isdir(work_dir):
        raise UserError(f'--work-dir {work_dir} is a file; pass a folder')
    existed = osp.isdir(work_dir)
    probe_in = work_dir if existed else osp.dirname(osp.abspath(work_dir))
    while not osp.exists(probe_in):
        probe_in = osp.dirname(probe_in)
    if not osp.isdir(probe_in):
        raise UserError(f'--work-dir {work_dir} lies under the file {probe_in}; pass a folder')
    try:
        shutil.rmtree(tempfile.mkdtemp(dir=probe_in, prefix='.write-test-'))
    except OSError as error:
        what = 'is not writable' if existed else f'cannot be created in {probe_in}'
        raise UserError(f'--work-dir {work_dir} {what} ({error.strerror}); pass a folder you '
                        'can write to') from None
    return existed


class _TrainingStarted:
    """Notes the first finished training iteration; writes resolved_config.py then (rank 0).

    Until then a failure counts as a failed start-up, whose files are removed again.
    """

    def __init__(self, cfg, work_dir: str) -> None:
        self.cfg, self.work_dir, self.started = cfg, work_dir, False

    def hook(self):
        from mmengine.hooks import Hook

        outer = self

        class TrainingStartedHook(Hook):
            priority = 'VERY_LOW'

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                if not outer.started:
                    outer.started = True
                    if runner.rank == 0:
                        write_text_atomically(osp.join(outer.work_dir, RESOLVED_CONFIG),
                                              outer.cfg.pretty_text)

        return TrainingStartedHook()


def _remove_failed_start(work_dir: str, before: Optional[set]) -> None:
    """Remove what a run that never trained made: the work dir if it made it (`before` is None),
    else the entries it added (MMEngine's timestamped log folder, its config copy)."""
    if not osp.isdir(work_dir):
        return
    if before is None:
        shutil.rmtree(work_dir, ignore_errors=True)
        return
    for name in set(os.listdir(work_dir)) - before:
        path = osp.join(work_dir, name)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def _log_process_seeds(runner, processes: Processes) -> None:
    """One line on rank 0 naming every process's seed (their augmentation streams differ)."""
    from mmengine.dist import all_gather_object
    seeds = all_gather_object(runner.seed)
    if runner.rank == 0:
        runner.logger.info(f'{processes.world_size} processes ({processes.launcher}, '
                           f'{runner.cfg.env_cfg.dist_cfg.backend}); seeds per process: '
                           f'{", ".join(map(str, seeds))}')


# -- the run --------------------------------------------------------------------------------------
_runs_in_this_process = []


def _separate_from_earlier_runs(cfg) -> None:
    """A second run in the same process (tests, benchmark.py) gets its own visualizer: MMEngine
    keeps one per name for the whole process, still writing into the first run's folder."""
    _runs_in_this_process.append(cfg.work_dir)
    if len(_runs_in_this_process) > 1 and cfg.get('visualizer'):
        cfg.visualizer.name = f'{cfg.visualizer.get("name", "visualizer")}-' \
                              f'{len(_runs_in_this_process)}'


def train(argv: Optional[Sequence[str]] = None) -> int:
    """The whole of train_cephalometric.py."""
    args = build_parser().parse_args(argv)
    select_device(args.device)
    processes = read_launcher(args.launcher)
    import torch  # only after select_device

    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda but no CUDA GPU is visible; use --device cpu')
    if args.amp and not torch.cuda.is_available():
        raise UserError('--amp needs a CUDA GPU; drop --amp on CPU')
    use_cuda = torch.cuda.is_available()
    if args.seed is not None:
        make_deterministic()
    if args.resume and last_checkpoint(args.work_dir) is None:
        raise UserError(f'nothing to resume in {args.work_dir} (no last_checkpoint); '
                        'run without --resume to start training')
    before = set(os.listdir(args.work_dir)) if check_work_dir(args.work_dir) else None

    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from cephalometric.model.checkpoint import resume_globals
    from cephalometric.training import config as config_utils

    cfg, names, data_root = build_config(args)
    landmarks_done = False
    if args.resume:
        with resume_globals():
            checkpoint = torch.load(last_checkpoint(args.work_dir), map_location='cpu',
                                    weights_only=True)
        done = checkpoint.get('meta', {}).get('epoch', 0)
        del checkpoint
        landmarks_done = done >= cfg.train_cfg.max_epochs
        if landmarks_done and not framing_pending(cfg, args.work_dir):
            if processes.rank == 0:
                print(f'training in {args.work_dir} already finished ({done} of '
                      f'{cfg.train_cfg.max_epochs} epochs); best model: '
                      f'{osp.join(args.work_dir, "best_MRE.pth")}. Pass a larger --epochs to '
                      'continue.')
            return 0
    backend = choose_backend(cfg, args.cfg_options, use_cuda) if processes.distributed else None

    started = _TrainingStarted(cfg, args.work_dir)
    try:
        if processes.distributed:
            # every process has passed the checks above when the group forms
            start_processes(cfg, processes, backend, use_cuda)
        if processes.rank == 0:
            os.makedirs(args.work_dir, exist_ok=True)
        if landmarks_done:
            started.started = True   # only the framing model is left to train
        else:
            runner = _build_runner(cfg)
            runner.register_hook(started.hook())
            runner.logger.info(f'{len(names)} landmarks: {", ".join(names)}')
            if processes.distributed:
                _log_process_seeds(runner, processes)
            _run(runner, 'the last checkpoint' if args.resume else cfg.load_from)
        # derived after start_processes, which fills in the process group's settings
        framing_cfg = config_utils.framing_config(cfg, args.work_dir)
        if framing_cfg is not None:
            from mmengine.dist import barrier
            barrier()   # every process reads the best_MRE.pth rank 0 has finished writing
            if not osp.isfile(framing_cfg.load_from):   # validation never found a finite MRE
                raise UserError(f'no {framing_cfg.load_from} to fine-tune the framing model from '
                                '(no validation MRE could be computed); check the training log')
            # An interrupted framing run continues under --resume; a new one starts afresh.
            framing_cfg.resume = bool(landmarks_done and args.resume
                                      and last_checkpoint(framing_cfg.work_dir))
            if framing_cfg.resume:
                framing_cfg.load_from = None
            runner = _build_runner(framing_cfg)
            runner.logger.info(f'framing model: {config_utils.framing_epochs(cfg)} epochs '
                               f'fine-tuned from {osp.join(args.work_dir, "best_MRE.pth")} with '
                               'zoom-out; stored in it when done')
            _run(runner, 'the framing run\'s last checkpoint' if framing_cfg.resume
                 else framing_cfg.load_from)
    except BaseException:
        if not started.started and processes.rank == 0:
            _remove_failed_start(args.work_dir, before)
        stop_processes(finished=False)
        raise
    stop_processes(finished=True)

    if processes.rank == 0:
        report_result(args.work_dir, data_root)
    return 0


def _build_runner(cfg):
    """MMEngine's Runner for `cfg`; a config it cannot build is the user's to fix (one line)."""
    from mmengine.runner import Runner

    _separate_from_earlier_runs(cfg)
    try:
        return Runner.from_cfg(cfg)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise UserError(f'the config cannot be built ({type(error).__name__}: {reason}); '
                        'check --config and --cfg-options') from None


def _run(runner, weights_source: str) -> None:
    """runner.train(); the Runner loads its checkpoint (resume) or initial weights (load_from)
    when training starts, with the safe loader's allow-list."""
    from cephalometric.model.checkpoint import resume_globals
    try:
        with resume_globals():
            runner.train()
    except pickle.UnpicklingError as error:  # only checkpoint loading unpickles in training
        reason = str(error).strip().splitlines()[0] if str(error).strip() else 'unpickling'
        raise UserError(f'cannot load {weights_source} with torch.load(weights_only=True) '
                        f'({reason}); use a checkpoint from this project or OpenMMLab\'s '
                        'model zoo') from None


def framing_pending(cfg, work_dir: str) -> bool:
    """The config wants a framing model and the published best_MRE.pth holds none yet."""
    import json

    from cephalometric.training import config as config_utils
    record_path = osp.join(work_dir, 'best_MRE.json')
    if not config_utils.framing_epochs(cfg) or not osp.isfile(record_path):
        return False
    with open(record_path) as handle:
        return 'framing_model' not in json.load(handle)


def report_result(work_dir: str, data_root: str) -> None:
    """The summary lines: best validation MRE against the mean-shape baseline, and the files."""
    import json

    from cephalometric.data.reader import mean_shape_baseline

    best_json = osp.join(work_dir, 'best_MRE.json')
    if not osp.isfile(best_json):
        print(f'no validation result in {work_dir}')
        return
    with open(best_json) as handle:
        best = json.load(handle)
    baseline = mean_shape_baseline(data_root, 'val')
    mm = ''
    if best['metrics'].get('MRE_mm') is not None:
        mm = f' = {best["metrics"]["MRE_mm"]:.2f} mm'
    print(f'validation MRE {best["best_score"]:.2f} px{mm} at epoch {best["epoch"]} '
          f'(mean-shape baseline: {baseline["MRE"]:.2f} px)')
    print(f'best checkpoint: {osp.join(work_dir, "best_MRE.pth")}')
    if best.get('framing_model'):
        print(f'framing model: {best["framing_model"]["epochs"]} epochs with zoom-out, stored in '
              'best_MRE.pth (finds the face in wider photographs)')
    curves = osp.join(work_dir, 'training_curves.png')
    if osp.isfile(curves):
        print(f'training curves: {curves}')
