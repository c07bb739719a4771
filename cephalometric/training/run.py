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
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import os.path as osp
import pickle
import re
import shutil
from typing import Optional, Sequence

from cephalometric.atomic import signals_deferred, write_text_atomically
from cephalometric.cli import add_options, check_options
from cephalometric.errors import UserError, first_line
from cephalometric.outputs import check_not_inputs, nearest_existing
from cephalometric.training.config import (  # noqa: F401  (the names tests and benchmark use)
    DEFAULT_CONFIG,
    DEFAULT_DATA_ROOT,
    DEFAULT_WORK_DIR,
    RESOLVED_CONFIG,
    build_config,
)
from cephalometric.training.launch import (
    Processes,
    choose_backend,
    make_deterministic,
    read_launcher,
    select_device,
    start_processes,
    stop_processes,
)

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
in wider or mirrored photographs at inference; it is stored in best_MRE.pth too. Then fine-tunes
another copy on small patches around each landmark for --refine-epochs (<work-dir>/refine/): the
refinement model, which re-locates every landmark at a finer scale (also in best_MRE.pth).
Everything else
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
    parser.add_argument('--refine-epochs', type=int,
                        help='epochs of the refinement model, fine-tuned from the landmark model '
                        'on patches around each landmark (config: 30; 0: none, the landmark '
                        'model\'s positions are final)')
    parser.add_argument('--batch-size', type=int,
                        help='images per step and per process (GPU or CPU process; config: 32)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by (processes x batch size) / 32 '
                        '(MMEngine auto_scale_lr)')
    parser.add_argument('--lr', type=float, help='Adam learning rate (config: 1e-3)')
    parser.add_argument('--warmup-iters', type=int, metavar='N',
                        help='iterations of linear learning-rate warm-up (config: 200; 0: none)')
    parser.add_argument('--input-size', type=int,
                        help='square model input in px, multiple of 32 (config: 256)')
    parser.add_argument('--sigma', type=float, help='heatmap Gaussian sigma (config: 2)')
    parser.add_argument('--workers', type=int,
                        help='data-loading processes per training process (config: 2)')
    parser.add_argument('--seed', type=int, help='random seed (config: 0; process k uses seed+k '
                        'for augmentation); also selects deterministic kernels')
    add_options(parser, 'device', help=dict(
        device='auto (CUDA when present), cpu, cuda or cuda:N (one process: that GPU; several '
               'processes take one GPU each by LOCAL_RANK) (default %(default)s)'))
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


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint MMEngine's `last_checkpoint` pointer names, if it exists."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8', errors='replace') as handle:
        path = handle.read(4096).strip()   # a path, as MMEngine writes it
    return path if osp.isfile(path) else None


def resumed_epochs(path: str) -> int:
    """How many epochs the resume checkpoint at `path` holds, read with the safe loader."""
    from cephalometric.model.checkpoint import load_checkpoint_file
    meta = load_checkpoint_file(path, training=True).get('meta')
    done = meta.get('epoch', 0) if isinstance(meta, dict) else 0
    return done if isinstance(done, int) else 0


def check_work_dir_inputs(work_dir: str, args, data_root: str) -> None:
    """The work dir must not hold what the run reads (its Runner rotates epoch_N.pth and writes
    best_MRE.pth there), nor lie in the data root (prepare --overwrite replaces that)."""
    load_from = args.load_from if args.load_from and osp.exists(args.load_from) else None
    check_not_inputs([(work_dir, '--work-dir')],
                     [(load_from, 'the --load-from checkpoint'), (args.config, 'the --config file'),
                      (data_root, 'the data root')])
    real, root = osp.realpath(work_dir), osp.realpath(data_root)
    if osp.commonpath([real, root]) == root:
        raise UserError(f'--work-dir {work_dir} lies inside the data root {data_root}, which '
                        'prepare_cephalometric_data.py --overwrite replaces; choose a work dir '
                        'outside it')


# Errors writing the work dir (a full disk, a quota, a read-only mount): the user's to fix.
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


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
    probe_in = nearest_existing(work_dir if existed else osp.dirname(osp.abspath(work_dir)))
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


# What MMEngine's Runner writes into a work dir before the first iteration: its timestamped log
# folder and its copy of the config (named like the config file, or <timestamp>.py).
_RUNNER_ENTRY = re.compile(r'^\d{8}_\d{6}(\.py)?$')


def _remove_failed_start(work_dir: str, before: Optional[set], config_name: Optional[str]) \
        -> None:
    """Remove what a run that never trained made, and nothing else: the Runner's own entries
    that were not there before (another program may have saved files meanwhile), then the work
    dir itself if this run made it (`before` is None) and it is empty again."""
    if not osp.isdir(work_dir):
        return
    for name in set(os.listdir(work_dir)) - (before or set()):
        if not (_RUNNER_ENTRY.match(name) or name == config_name):
            continue
        path = osp.join(work_dir, name)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
    if before is None:
        with contextlib.suppress(OSError):
            os.rmdir(work_dir)


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


def train(argv: Optional[Sequence[str]] = None, calibrate=None) -> int:
    """The whole of train_cephalometric.py.

    calibrate: called as calibrate(best_MRE.pth, data_root) once the models have trained (rank 0),
    to store the error calibration in the checkpoint; it predicts, which is a layer above
    training, so the entry point passes it in (`evaluation.calibration.calibrate_checkpoint`).
    """
    args = check_options(build_parser().parse_args(argv))
    processes = read_launcher(args.launcher)
    use_cuda = _select_hardware(args, processes)
    if args.resume and last_checkpoint(args.work_dir) is None:
        raise UserError(f'nothing to resume in {args.work_dir} (no last_checkpoint); '
                        'run without --resume to start training')
    before = set(os.listdir(args.work_dir)) if check_work_dir(args.work_dir) else None

    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from cephalometric.training import config as config_utils

    cfg, names, data_root = build_config(args)
    check_work_dir_inputs(args.work_dir, args, data_root)
    landmarks_done = False
    if args.resume:
        done = resumed_epochs(last_checkpoint(args.work_dir))
        landmarks_done = done >= cfg.train_cfg.max_epochs
        if landmarks_done and not framing_pending(cfg, args.work_dir) \
                and not refine_pending(cfg, args.work_dir):
            if processes.rank == 0:
                _calibrate_if_missing(args.work_dir, data_root, calibrate)
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
            _train_landmark_model(cfg, names, processes, started, args.resume)
        # derived after start_processes, which fills in the process group's settings
        framing_cfg = config_utils.framing_config(cfg, args.work_dir)
        if framing_cfg is not None and not (landmarks_done
                                            and not framing_pending(cfg, args.work_dir)):
            _train_framing_model(framing_cfg, config_utils.framing_epochs(cfg), args.work_dir,
                                 resume=landmarks_done and args.resume)
        if config_utils.refine_epochs(cfg) and not (landmarks_done
                                                    and not refine_pending(cfg, args.work_dir)):
            _train_refine_model(cfg, args.work_dir, data_root,
                                resume=landmarks_done and args.resume)
    except BaseException:
        if not started.started and processes.rank == 0:
            _remove_failed_start(args.work_dir, before,
                                 osp.basename(cfg.filename) if cfg.filename else None)
        stop_processes(finished=False)
        raise
    stop_processes(finished=True)

    if processes.rank == 0:
        _calibrate_if_missing(args.work_dir, data_root, calibrate, again=True)
        report_result(args.work_dir, data_root)
    return 0


def _calibrate_if_missing(work_dir: str, data_root: str, calibrate, again: bool = False) -> None:
    """The error calibration of best_MRE.pth (`again`: also when it has one, from an earlier best
    model), with one line on what it found."""
    best = osp.join(work_dir, 'best_MRE.pth')
    if calibrate is None or not osp.isfile(best):
        return
    from cephalometric.model.checkpoint import load_published
    if not again and load_published(best).settings.get('error_calibration'):
        return
    calibration = calibrate(best, data_root)
    if calibration:
        print(f'error calibration: measured on {calibration["images"]} {calibration["split"]} '
              'images, stored in best_MRE.pth (each landmark\'s expected error and 90% radius)')
    refinement = (calibration or {}).get('refinement')
    if refinement:
        from cephalometric.training.hooks import note_in_record
        record = _read_record(osp.join(work_dir, 'best_MRE.json')).get('refine_model') or {}
        note_in_record(best, 'refine_model', dict(record, kept=refinement['kept'],
                                                  val_mre_refined=refinement['with_refinement'],
                                                  val_mre_coarse=refinement['without']))
        print(f'refinement model: val MRE {refinement["with_refinement"]:.2f} px with it, '
              f'{refinement["without"]:.2f} px without; '
              + ('kept' if refinement['kept'] else 'not kept (it did not help; train it longer '
                 'with --refine-epochs)'))


def _select_hardware(args, processes: Processes) -> bool:
    """Device, mixed precision and deterministic kernels as asked; returns whether CUDA is used."""
    select_device(args.device, processes.distributed)
    import torch  # only after select_device

    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f'--device {args.device} but no CUDA GPU is visible; use --device cpu')
    if args.amp and not torch.cuda.is_available():
        raise UserError('--amp needs a CUDA GPU; drop --amp on CPU')
    if args.seed is not None:
        make_deterministic()
    return torch.cuda.is_available()


def _train_landmark_model(cfg, names, processes: Processes, started: '_TrainingStarted',
                          resume: bool) -> None:
    """The landmark model's run: MMEngine's Runner on the crops, best_MRE.pth by validation."""
    runner = _build_runner(cfg)
    runner.register_hook(started.hook())
    runner.logger.info(f'{len(names)} landmarks: {", ".join(names)}')
    if processes.distributed:
        _log_process_seeds(runner, processes)
    _run(runner, 'the last checkpoint' if resume else cfg.load_from)


def _train_framing_model(framing_cfg, epochs: int, work_dir: str, resume: bool) -> None:
    """The framing model's run: a copy of best_MRE.pth fine-tuned with zoom-out, stored back in
    it (FramingModelHook). `resume`: continue an interrupted framing run of a finished landmark
    run; otherwise it starts afresh from best_MRE.pth."""
    from mmengine.dist import barrier
    barrier()   # every process reads the best_MRE.pth rank 0 has finished writing
    if not osp.isfile(framing_cfg.load_from):   # validation never found a finite MRE
        raise UserError(f'no {framing_cfg.load_from} to fine-tune the framing model from '
                        '(no validation MRE could be computed); check the training log')
    framing_cfg.resume = bool(resume and last_checkpoint(framing_cfg.work_dir))
    if framing_cfg.resume:
        framing_cfg.load_from = None
    runner = _build_runner(framing_cfg)
    runner.logger.info(f'framing model: {epochs} epochs fine-tuned from '
                       f'{osp.join(work_dir, "best_MRE.pth")} with zoom-out; stored in it when '
                       'done')
    _run(runner, 'the framing run\'s last checkpoint' if framing_cfg.resume
         else framing_cfg.load_from)


def _train_refine_model(cfg, work_dir: str, data_root: str, resume: bool) -> None:
    """The refinement model's run: a copy of best_MRE.pth fine-tuned on patches around each
    landmark, sized and jittered by the landmark model's validation MRE, stored back in it
    (RefineModelHook). `resume` as for the framing model."""
    from mmengine.dist import barrier

    from cephalometric.training import config as config_utils
    barrier()   # every process reads the best_MRE.pth and .json rank 0 has finished writing
    checkpoint, record_path = (osp.join(work_dir, name) for name in ('best_MRE.pth',
                                                                     'best_MRE.json'))
    if not osp.isfile(checkpoint) or not osp.isfile(record_path):
        raise UserError(f'no {checkpoint} to fine-tune the refinement model from (no '
                        'validation MRE could be computed); check the training log')
    validation_mre = float(_read_record(record_path).get('best_score', float('nan')))
    refine_cfg = config_utils.refine_config(
        cfg, work_dir, validation_mre, config_utils.mean_box_side(cfg, data_root))
    refine_cfg.resume = bool(resume and last_checkpoint(refine_cfg.work_dir))
    if refine_cfg.resume:
        refine_cfg.load_from = None
    runner = _build_runner(refine_cfg)
    hook = next(h for h in refine_cfg.custom_hooks if h['type'] == 'RefineModelHook')
    runner.logger.info(f'refinement model: {config_utils.refine_epochs(cfg)} epochs fine-tuned '
                       f'from {checkpoint} on {refine_cfg.refine_model.input_size} px patches of '
                       f'{100 * hook["settings"]["patch"]:.1f}% of the face box (the landmark '
                       f'model\'s error on the val split: {validation_mre:.2f} px); stored in it '
                       'when done')
    _run(runner, 'the refinement run\'s last checkpoint' if refine_cfg.resume
         else refine_cfg.load_from)


def _build_runner(cfg):
    """MMEngine's Runner for `cfg`; a config it cannot build is the user's to fix (one line)."""
    from mmengine.runner import Runner

    _separate_from_earlier_runs(cfg)
    try:
        runner = Runner.from_cfg(cfg)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        reason = first_line(error, '')
        raise UserError(f'the config cannot be built ({type(error).__name__}: {reason}); '
                        'check --config and --cfg-options') from None
    from mmengine.hooks import CheckpointHook
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook):
            hook._save_checkpoint_with_step = _whole_or_not_at_all(
                hook._save_checkpoint_with_step)
    return runner


def _whole_or_not_at_all(save):
    """MMEngine writes epoch_N.pth in place, then removes the oldest and points last_checkpoint
    at the new one: Ctrl-C or SIGTERM wait until all of that is done, so an interrupted run
    leaves whole checkpoints that --resume continues from (the signal then stops the run)."""
    import functools

    @functools.wraps(save)
    def whole(*args, **kwargs):
        with signals_deferred():
            return save(*args, **kwargs)
    return whole


def _run(runner, weights_source: str) -> None:
    """runner.train(); the Runner loads its checkpoint (resume) or initial weights (load_from)
    when training starts, with the safe loader's allow-list."""
    from cephalometric.model.checkpoint import resume_globals
    try:
        with resume_globals():
            runner.train()
    except pickle.UnpicklingError as error:  # only checkpoint loading unpickles in training
        reason = first_line(error, 'unpickling')
        raise UserError(f'cannot load {weights_source} with torch.load(weights_only=True) '
                        f'({reason}); use a checkpoint from this project or OpenMMLab\'s '
                        'model zoo') from None
    except OSError as error:
        if error.errno not in WRITE_FAILURES:
            raise
        where = error.filename or runner.work_dir
        raise UserError(f'training stopped: cannot write {where} ({error.strerror}); free some '
                        'disk space (or fix the permissions), then run again with --resume to '
                        'continue from the last complete checkpoint') from None


def refine_pending(cfg, work_dir: str) -> bool:
    """The config wants a refinement model and the published best_MRE.pth holds none yet."""
    from cephalometric.training import config as config_utils
    record_path = osp.join(work_dir, 'best_MRE.json')
    if not config_utils.refine_epochs(cfg) or not osp.isfile(record_path):
        return False
    return 'refine_model' not in _read_record(record_path)


def framing_pending(cfg, work_dir: str) -> bool:
    """The config wants a framing model and the published best_MRE.pth holds none yet."""

    from cephalometric.training import config as config_utils
    record_path = osp.join(work_dir, 'best_MRE.json')
    if not config_utils.framing_epochs(cfg) or not osp.isfile(record_path):
        return False
    return 'framing_model' not in _read_record(record_path)


def _read_record(path: str) -> dict:
    """best_MRE.json of a work dir (which may come from someone else), as bounded data."""
    from cephalometric.json_data import read_json_file
    try:
        record = read_json_file(path, max_bytes=1 << 20)
    except (OSError, ValueError) as error:
        raise UserError(f'{path} is not the record training writes ({first_line(error)}); '
                        'start a new --work-dir') from None
    if not isinstance(record, dict) or not isinstance(record.get('metrics', {}), dict):
        raise UserError(f'{path} is not the record training writes; start a new --work-dir')
    return record


def report_result(work_dir: str, data_root: str) -> None:
    """The summary lines: best validation MRE against the mean-shape baseline, and the files."""
    from cephalometric.data.reader import mean_shape_baseline

    best_json = osp.join(work_dir, 'best_MRE.json')
    if not osp.isfile(best_json):
        print(f'no validation result in {work_dir}')
        return
    best = _read_record(best_json)
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
    if best.get('refine_model') and best['refine_model'].get('kept', True):
        print(f'refinement model: {best["refine_model"]["epochs"]} epochs on patches of '
              f'{100 * best["refine_model"]["patch"]:.1f}% of the face box, stored in '
              'best_MRE.pth (re-locates each landmark at a finer scale)')
    curves = osp.join(work_dir, 'training_curves.png')
    if osp.isfile(curves):
        print(f'training curves: {curves}')
