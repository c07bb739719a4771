"""Measure inference, data-preparation and training speed on this machine, in one run.

    python benchmark.py                    # 256x256 HRNetV2-W18 (random weights), demo images
    python benchmark.py --checkpoint work_dirs/demo/best_MRE.pth --images photos/
    python benchmark.py --threads 1        # steadier when other programs keep the CPU busy
    python benchmark.py --quick            # smoke test: 3 rounds; no memory/preparation/training

Inference: stock MMPose (init_model + inference_topdown, one image per call) against our
LandmarkPredictor with each backend, one image per call and batched (the landmark model alone, which
is what MMPose runs). The paths take turns within
every round (the starting path rotates), so load from other programs hits them alike; the table
gives the median time per image and the largest landmark distance (px) from MMPose's answer.
With automatic framing: `predict(bbox='auto')` on the same images, with the checkpoint's
refinement model (when it has one) against without it, interleaved alike, as ratios.
Peak memory is the RSS high-water mark (VmHWM, or getrusage's ru_maxrss off Linux) of a fresh
process per path that loads the model and predicts the same images.
Data preparation: prepare_dataset on a generated 1501-record 224x224 pickle.
Training: images/s of train_cephalometric.py against a plain MMEngine Runner.from_cfg built from the
same resolved config, a few dozen iterations each in this process, with data-loading vs compute time
from MMEngine's per-iteration log; then train_cephalometric.py with 1 process and with 2 (torchrun
--launcher pytorch: gloo on a CPU, nccl on GPUs), each in fresh processes, images/s over all
processes. On a CPU the processes share the same cores, so 2 processes show what the multi-process
machinery costs, not a speed-up; on GPUs each process has its own card.

Timings depend on the machine and on whatever else runs on it: the load average is printed with
them. PyTorch with several threads slows down far more on a busy CPU than ONNX Runtime does, so
compare figures from an idle machine, or from --threads 1. The last line reads
`inference speedup vs MMPose: N.NNx` (median single-image latency of MMPose / of our fastest
backend here: onnxruntime on a CPU when installed, else pytorch). Imports only from the package.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import os.path as osp
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from cephalometric.errors import UserError, run_cli
from cephalometric.evaluation.mmpose_reference import stock_model, stock_predict

ROOT = osp.dirname(osp.abspath(__file__))
STOCK = 'MMPose inference_topdown'   # the baseline every inference path is compared with
TRAIN_SCRIPT = osp.join(ROOT, 'train_cephalometric.py')
DEMO_CHECKPOINT = osp.join('work_dirs', 'demo', 'best_MRE.pth')
DEMO_IMAGES = osp.join('data', 'demo', 'cephalometric', 'images')


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoint', help='.pth from training (default: a 256x256 model with '
                        'random weights built from the project config: timing does not depend on '
                        'the weights)')
    parser.add_argument('--input-size', type=int, default=256,
                        help='input size of the default random-weight model (default 256)')
    parser.add_argument('--images', help=f'folder of test images (default: {DEMO_IMAGES} if '
                        'present, else generated demo faces)')
    parser.add_argument('--num-images', type=int, default=8, help='images to use (default 8)')
    parser.add_argument('--iterations', type=int, default=10,
                        help='timed rounds; each path predicts once per round (default 10)')
    parser.add_argument('--batch-size', type=int, default=8, help='batched paths (default 8)')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: CUDA when available')
    parser.add_argument('--threads', type=int,
                        help='CPU threads for every path (default: the libraries\' own, one per '
                        'core); 1 gives steadier figures on a machine that is busy with other work')
    parser.add_argument('--skip-memory', action='store_true', help='no peak-memory processes')
    parser.add_argument('--skip-prepare', action='store_true', help='no data-preparation timing')
    parser.add_argument('--prepare-records', type=int, default=1501,
                        help='records in the generated pickle for preparation (default 1501)')
    parser.add_argument('--skip-training', action='store_true', help='no training throughput')
    parser.add_argument('--train-iterations', type=int, default=20,
                        help='training iterations per path (default 20; the first 3 are warm-up)')
    parser.add_argument('--train-batch-size', type=int, default=8, help='(default 8)')
    parser.add_argument('--train-input-size', type=int, default=96,
                        help='training input size (default 96, as make demo)')
    parser.add_argument('--quick', action='store_true', help='3 rounds, 2 images, batch 2; skip '
                        'memory, preparation and training (a smoke test, not a measurement)')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)  # internal: one path per process
    parser.add_argument('--onnx', help=argparse.SUPPRESS)
    parser.add_argument('--images-npz', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.num_images, args.batch_size = 3, 2, 2
        args.skip_memory = args.skip_prepare = args.skip_training = True
    for name in ('num_images', 'iterations', 'batch_size', 'train_iterations', 'train_batch_size'):
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be at least 1')
    return args


# -- inputs ---------------------------------------------------------------------------------------
def random_checkpoint(path: str, input_size: int) -> str:
    """A best_MRE.pth-style checkpoint of the project config's model with random weights."""
    import torch

    from cephalometric.training.config import random_weight_model
    cfg, dataset_meta, state = random_weight_model(input_size)
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, dataset_meta=dataset_meta), state_dict=state),
               path)
    return path


def load_images(folder, count: int) -> tuple[list, str]:
    """RGB images: from `folder`, else the demo images, else generated faces."""
    folder = folder or (DEMO_IMAGES if osp.isdir(DEMO_IMAGES) else None)
    if folder is None:
        from cephalometric.data.decoding import decode_image
        from cephalometric.data.demo import make_demo_dataframe
        frame = make_demo_dataframe(num_patients=count, seed=1)
        return [decode_image(value) for value in frame['Image']], 'generated demo faces'
    if not osp.isdir(folder):
        raise UserError(f'--images {folder} is not a folder')
    from cephalometric.data.images import find_images, read_rgb
    paths = find_images(folder)[:count]
    return [read_rgb(p) for p in paths], folder


def load_depths(folder, images: list) -> tuple[list, str]:
    """RGB-D models: <stem>.npy beside each image of `folder` when all are there (a prepared RGB-D
    dataset), else a smooth dome per image (speed does not depend on the depth values)."""
    from cephalometric.data.depth import read_depth_file
    folder = folder or (DEMO_IMAGES if osp.isdir(DEMO_IMAGES) else None)
    if folder is not None:
        from cephalometric.data.images import find_images
        paths = [osp.splitext(p)[0] + '.npy' for p in find_images(folder)[:len(images)]]
        if all(osp.isfile(p) for p in paths):
            return [read_depth_file(p) for p in paths], 'depth maps beside the images'
    return [dome_depth(image) for image in images], 'synthetic depth domes'


def dome_depth(image) -> np.ndarray:
    """A smooth depth map (metres) the size of `image`, nearest in the middle."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    return 0.6 + 0.3 * ((xs / width - 0.5) ** 2 + (ys / height - 0.5) ** 2)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Windows
        return float('nan')


def has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# -- inference ------------------------------------------------------------------------------------
def time_paths(paths: dict, images: list, rounds: int):
    """Per path: list of seconds per image over `rounds` turns, and the keypoints of every image.

    A path is (callable(list of images) -> (N, K, 2) keypoints, images per call).
    """
    keypoints = {name: np.stack([k for start in range(0, len(images), per_call)
                                 for k in run(images[start:start + per_call])])
                 for name, (run, per_call) in paths.items()}  # also the warm-up
    times = {name: [] for name in paths}
    names = list(paths)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run, per_call = paths[name]
            chunk = [images[(r * per_call + i) % len(images)] for i in range(per_call)]
            start = time.perf_counter()
            run(chunk)
            times[name].append((time.perf_counter() - start) / per_call)
    return times, keypoints


def inference_paths(args, checkpoint: str, device: str, ours, onnx_path, depth_of=None) -> dict:
    """`depth_of` (RGB-D models): image -> its depth map, for every path including MMPose's."""
    from cephalometric.prediction.predictor import LandmarkPredictor

    stock = stock_model(checkpoint, device)

    def depths(ims):
        return {} if depth_of is None else {'depths': [depth_of(im) for im in ims]}

    def single(predictor):
        return lambda ims: [p.keypoints for p in predictor(ims, batch_size=1, **depths(ims))], 1

    def batched(predictor):
        return (lambda ims: [p.keypoints for p in predictor(ims, batch_size=len(ims),
                                                            **depths(ims))],
                args.batch_size)

    def stock_path(ims):
        return [stock_predict(stock, im, None if depth_of is None else depth_of(im)) for im in ims]

    coarse = ours.coarse_predictor()   # the landmark model alone: what MMPose computes
    paths = {STOCK: (stock_path, 1), 'ours pytorch': single(coarse),
             f'ours pytorch, batch {args.batch_size}': batched(coarse)}
    if onnx_path:
        fast = LandmarkPredictor(onnx_path, threads=args.threads).coarse_predictor()
        paths['ours onnxruntime'] = single(fast)
        paths[f'ours onnxruntime, batch {args.batch_size}'] = batched(fast)
    return paths


FRAMED = 'framing as before, landmark model alone'   # the baseline of the framing table


def framing_paths(ours, depth_of=None) -> dict:
    """`predict(bbox='auto')` one image per call: the landmark model alone with framing as it was
    (the full search only, both directions refined whatever the coarse pass showed: the
    baseline), as it is now, and with the checkpoint's refinement model when it has one."""
    import functools
    from unittest import mock

    from cephalometric.prediction import framing
    full_search_only = (mock.patch.object(framing, 'DIRECTION_MARGIN', float('inf')),
                        mock.patch.object(framing, 'FaceFramer', functools.partial(
                            framing.FaceFramer, short_way=False)))

    def framed(predictor, patches=()):
        def run(ims):
            with contextlib.ExitStack() as stack:
                for patch in patches:
                    stack.enter_context(patch)
                return [p.keypoints for p in predictor.predict(
                    ims, 'auto', **({} if depth_of is None else
                                    {'depths': [depth_of(im) for im in ims]}))]
        return run, 1
    paths = {FRAMED: framed(ours.coarse_predictor(), full_search_only),
             'framing, landmark model alone': framed(ours.coarse_predictor())}
    if ours.refiner is not None:
        paths['framing + refinement'] = framed(ours)
    return paths


def peak_rss_mib() -> float:
    """RSS high-water mark of this process: VmHWM (Linux; reset by exec, unlike ru_maxrss, which
    a child inherits from the process that forked it), else getrusage's ru_maxrss."""
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    per_mib = 1024 * 1024 if sys.platform == 'darwin' else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mib


def memory_probe(args) -> int:
    """Internal: load one path's model in this fresh process, predict, print RSS figures as JSON."""
    images = list(np.load(args.images_npz).values())
    kind = args.memory_probe
    if kind in ('mmpose', 'pytorch'):  # the same imports, so "model + run" compares alike
        import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401

        import mmpose.apis  # noqa: F401
        from mmpose.utils import register_all_modules
        register_all_modules()
    else:
        import onnxruntime  # noqa: F401
    from cephalometric.prediction.predictor import LandmarkPredictor
    baseline = peak_rss_mib()
    if kind == 'mmpose':
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        model = stock_model(args.checkpoint, args.device)
        rgbd = model.cfg.model.backbone.get('in_channels', 3) == 4
        for image in images:
            stock_predict(model, image, dome_depth(image) if rgbd else None)
    else:
        predictor = LandmarkPredictor(args.onnx if kind == 'onnxruntime' else args.checkpoint,
                                      device=args.device, threads=args.threads)
        for image in images:  # one image per call, like MMPose's path
            predictor([image], **({'depths': [dome_depth(image)]} if predictor.needs_depth
                                  else {}))
    peak = peak_rss_mib()
    print(json.dumps({'after_imports_mib': baseline, 'peak_mib': peak,
                      'torch_loaded': 'torch' in sys.modules}))
    return 0


def measure_memory(args, checkpoint, onnx_path, images, device, workdir) -> dict:
    npz = osp.join(workdir, 'images.npz')
    np.savez(npz, *images)
    results = {}
    kinds = ['mmpose', 'pytorch'] + (['onnxruntime'] if onnx_path else [])
    for kind in kinds:
        command = [sys.executable, osp.abspath(__file__), '--memory-probe', kind,
                   '--checkpoint', checkpoint, '--images-npz', npz, '--device', device]
        command += ['--onnx', onnx_path] if onnx_path else []
        command += ['--threads', str(args.threads)] if args.threads else []
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise UserError(f'memory probe {kind} failed:\n{done.stderr[-2000:]}')
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# -- data preparation and training ----------------------------------------------------------------
def time_prepare(records: int, workdir: str) -> dict:
    from cephalometric.data.demo import write_demo_pickle
    from cephalometric.data.writer import prepare_dataset

    start = time.perf_counter()
    pickle_path = write_demo_pickle(osp.join(workdir, 'demo.pkl'), num_patients=records)
    generated = time.perf_counter() - start
    out = osp.join(workdir, 'prepared')
    start = time.perf_counter()
    prepare_dataset(pickle_path, out, progress=False)
    seconds = time.perf_counter() - start
    os.remove(pickle_path)
    return {'records': records, 'seconds': seconds, 'generate_seconds': generated, 'out': out}


def _iteration_stats(work_dir: str, images_per_iteration: int, warmup: int = 3) -> dict:
    """Medians of the per-iteration times MMEngine logged (rank 0's scalars.json in work_dir)."""
    total, data = [], []
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as stream:
            for line in stream:
                entry = json.loads(line)
                if 'time' in entry and 'loss' in entry:  # training iterations only
                    total.append(float(entry['time']))
                    data.append(float(entry['data_time']))
    total, data = total[warmup:], data[warmup:]
    if not total:
        raise UserError(f'no timed training iterations in {work_dir}; raise --train-iterations '
                        'above 3')
    return {'images_per_s': images_per_iteration / float(np.median(total)),
            'iteration_s': float(np.median(total)), 'data_s': float(np.median(data)),
            'iterations': len(total)}


def _training_argv(args, data_root: str, work_dir: str, device: str, processes: int) -> list:
    """One epoch of `--train-iterations` iterations per process, every iteration logged."""
    images = args.train_iterations * args.train_batch_size * processes
    return ['--data-root', data_root, '--work-dir', work_dir, '--no-pretrained', '--epochs', '1',
            '--batch-size', str(args.train_batch_size), '--input-size', str(args.train_input_size),
            '--workers', '0', '--device', device, '--framing-epochs', '0', '--cfg-options',
            f'train_dataloader.dataset.indices={images}', 'train_cfg.val_interval=1000',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            'log_level=WARNING']  # no validation, every iteration's own time, quiet log


def time_training(args, data_root: str, device: str, workdir: str) -> dict:
    """One process, in this one: a plain MMEngine Runner from the resolved config against
    train_cephalometric's whole path (cephalometric.training.train)."""
    from mmengine.runner import Runner

    from cephalometric.training import run as training

    results = {}
    for name in ('plain', 'ours'):  # plain first: any one-off warm-up cost lands on the baseline
        work_dir = osp.join(workdir, name)
        argv = _training_argv(args, data_root, work_dir, device, 1)
        log = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(log):
            if name == 'ours':
                training.train(argv)
            else:
                cfg = training.build_config(training.build_parser().parse_args(argv))[0]
                cfg.visualizer.name = 'bench-plain'
                Runner.from_cfg(cfg).train()
        results[name] = _iteration_stats(work_dir, args.train_batch_size)
        results[name]['wall_s'] = time.perf_counter() - start
    return results


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def time_processes(args, data_root: str, device: str, workdir: str) -> dict:
    """train_cephalometric.py with 1 process and with 2 (torchrun, gloo on CPU / nccl on GPUs),
    each a fresh run; images/s counts the images of all processes."""
    results = {}
    for count in (1, 2):
        work_dir = osp.join(workdir, f'processes_{count}')
        command = [sys.executable, TRAIN_SCRIPT]
        if count > 1:
            command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
                       str(count), '--master_addr', '127.0.0.1', '--master_port',
                       str(_free_port()), TRAIN_SCRIPT, '--launcher', 'pytorch']
        env = dict(os.environ)
        if args.threads:
            env['OMP_NUM_THREADS'] = str(args.threads)
        start = time.perf_counter()
        done = subprocess.run(command + _training_argv(args, data_root, work_dir, device, count),
                              capture_output=True, text=True, cwd=ROOT, env=env)
        if done.returncode != 0:
            raise UserError(f'training with {count} process(es) failed:\n'
                            f'{(done.stdout + done.stderr)[-2000:]}')
        results[count] = _iteration_stats(work_dir, args.train_batch_size * count)
        results[count]['wall_s'] = time.perf_counter() - start
    return results


# -- report ---------------------------------------------------------------------------------------
def table(rows: list, header: list) -> str:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    lines = ['  '.join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                       for i, (v, w) in enumerate(zip(row, widths))) for row in [header] + rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # before torch initialises CUDA
    if args.memory_probe:
        return memory_probe(args)
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    import torch

    from cephalometric.prediction.predictor import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # MMPose's path and training too
    load_before = load_average()
    workdir = tempfile.mkdtemp(prefix='ceph-bench-')
    try:
        run = measure_all(args, device, workdir)
        run['load'] = (load_before, load_average())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_inference(args, device, run)
    print_memory(device, run['memory'])
    print_prepare(run['prepared'])
    print_training(args, run['training'])
    print_processes(args, device, run['processes'])
    fastest = 'ours onnxruntime' if run['onnx_path'] else 'ours pytorch'
    stock_median = statistics.median(run['times'][STOCK])
    print(f'\n"ours" below is {fastest}, one image per call.')
    print(f'inference speedup vs MMPose: '
          f'{stock_median / statistics.median(run["times"][fastest]):.2f}x')
    return 0



def measure_all(args, device: str, workdir: str) -> dict:
    """Every measurement the options ask for, in one dict (see the print_* functions)."""
    from cephalometric.prediction.predictor import LandmarkPredictor
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = random_checkpoint(osp.join(workdir, 'random.pth'), args.input_size)
    elif not osp.isfile(checkpoint):
        raise UserError(f'checkpoint not found: {checkpoint}')
    images, source = load_images(args.images, args.num_images)
    ours = LandmarkPredictor(checkpoint, device=device, threads=args.threads)
    onnx_path, export_s = None, None
    if device == 'cpu' and has_onnxruntime():
        onnx_path = osp.join(workdir, 'model.onnx')
        start = time.perf_counter()
        ours.export_onnx(onnx_path)
        export_s = time.perf_counter() - start
    depth_of, depth_source = None, None
    if ours.needs_depth:   # an RGB-D checkpoint: every path gets each image's depth map
        depths, depth_source = load_depths(args.images, images)
        by_image = {id(image): depth for image, depth in zip(images, depths)}
        depth_of = lambda image: by_image[id(image)]  # noqa: E731
    paths = inference_paths(args, checkpoint, device, ours, onnx_path, depth_of)
    times, keypoints = time_paths(paths, images, args.iterations)
    framing_times, _ = time_paths(framing_paths(ours, depth_of), images, args.iterations)
    memory = (measure_memory(args, checkpoint, onnx_path, images, device, workdir)
              if not args.skip_memory else None)
    prepared = time_prepare(args.prepare_records, workdir) if not args.skip_prepare else None
    training = processes = None
    if not args.skip_training:
        data_root = prepared['out'] if prepared else None
        if data_root is None:
            data_root = time_prepare(max(40, 2 * args.train_iterations * args.train_batch_size),
                                     workdir)['out']
        training = time_training(args, data_root, device, workdir)
        processes = time_processes(args, data_root, device, workdir)
    return dict(ours=ours, images=images, source=source, onnx_path=onnx_path, export_s=export_s,
                depth_source=depth_source, times=times, keypoints=keypoints,
                framing_times=framing_times, memory=memory,
                prepared=prepared, training=training, processes=processes)


def print_inference(args, device: str, run: dict) -> None:
    import torch
    ours, images, times, keypoints = run['ours'], run['images'], run['times'], run['keypoints']
    ort_version = sys.modules['onnxruntime'].__version__ if run['onnx_path'] else None
    width, height = ours.input_size
    stock_median = statistics.median(times[STOCK])
    load_before, load_after = run['load']
    print(f'Machine: {os.cpu_count()} CPUs, torch {torch.__version__} with '
          f'{torch.get_num_threads()} threads, device {device}; load average '
          f'{load_before:.2f} before, {load_after:.2f} after (other programs slow all paths)'
          + (f'; onnxruntime {ort_version}, its own default threads' if ort_version else '')
          + (f'; --threads {args.threads} everywhere' if args.threads else ''))
    print(f'Model: {args.checkpoint or "random weights, project config"}, input {width}x{height}, '
          f'{len(ours.names)} landmarks; images: {len(images)} from {run["source"]} '
          f'({images[0].shape[1]}x{images[0].shape[0]})'
          + (f'; RGB-D model, {run["depth_source"]}' if run['depth_source'] else ''))
    if run['export_s'] is not None:
        print(f'ONNX export (once per model, export_onnx.py): {run["export_s"]:.1f} s')
    print(f'\nInference, {args.iterations} rounds, paths interleaved; ms per image'
          + (' (--quick: a smoke test, not a measurement)' if args.quick else ''))
    rows = []
    for name, values in times.items():
        distance = np.linalg.norm(keypoints[name] - keypoints[STOCK], axis=-1).max()
        rows.append([name, f'{statistics.median(values) * 1e3:.1f}', f'{min(values) * 1e3:.1f}',
                     f'{stock_median / statistics.median(values):.2f}x',
                     'reference' if name == STOCK else f'{distance:.5f}'])
    print(table(rows, ['path', 'median', 'min', 'vs MMPose', 'max landmark diff px']))
    framed = run['framing_times']
    base = statistics.median(framed[FRAMED])
    print(f'\nAutomatic framing (predict bbox=auto, pytorch, one image per call), '
          f'{args.iterations} rounds, interleaved; ms per image'
          + ('' if len(framed) > 2 else '; this checkpoint has no refinement model'))
    print(table([[name, f'{statistics.median(v) * 1e3:.1f}', f'{min(v) * 1e3:.1f}',
                  f'{statistics.median(v) / base:.2f}x'] for name, v in framed.items()],
                ['path', 'median', 'min', f'vs {FRAMED}']))


def print_memory(device: str, memory) -> None:
    if not memory:
        return
    print('\nPeak memory: RSS high-water mark (VmHWM) of a fresh process per path that loads '
          'the model and predicts the images one per call; MiB'
          + ('; GPU memory not included' if device != 'cpu' else ''))
    rows = [[kind, f'{m["after_imports_mib"]:.0f}', f'{m["peak_mib"]:.0f}',
             f'{m["peak_mib"] - m["after_imports_mib"]:.0f}',
             'yes' if m['torch_loaded'] else 'no'] for kind, m in memory.items()]
    print(table(rows, ['path', 'after imports', 'peak', 'model + run', 'torch loaded']))


def print_prepare(prepared) -> None:
    if prepared:
        print(f'\nData preparation (prepare_dataset, {prepared["records"]} generated 224x224 '
              f'records): {prepared["records"] / prepared["seconds"]:.0f} records/s, '
              f'{prepared["seconds"]:.1f} s total (generating the pickle took '
              f'{prepared["generate_seconds"]:.1f} s, not counted)')


def print_training(args, training) -> None:
    if not training:
        return
    plain, ours_run = training['plain'], training['ours']
    print(f'\nTraining, input {args.train_input_size}x{args.train_input_size}, batch '
          f'{args.train_batch_size}, {args.train_iterations} iterations each (first 3 are '
          'warm-up), data loaded in the main process; medians per iteration')
    rows = [[label, f'{r["images_per_s"]:.2f}', f'{r["iteration_s"]:.3f}', f'{r["data_s"]:.3f}',
             f'{r["iteration_s"] - r["data_s"]:.3f}', f'{r["wall_s"]:.1f}']
            for label, r in (('MMEngine Runner.from_cfg', plain),
                             ('train_cephalometric.py', ours_run))]
    print(table(rows, ['path', 'images/s', 'iteration s', 'data s', 'compute s', 'wall s']))
    print(f'train_cephalometric.py overhead vs plain MMEngine: '
          f'{(plain["images_per_s"] / ours_run["images_per_s"] - 1) * 100:+.1f}%')


def print_processes(args, device: str, processes) -> None:
    if not processes:
        return
    one, two = processes[1], processes[2]
    print(f'\nTraining with several processes (train_cephalometric.py; 2 via torchrun '
          f'--launcher pytorch, {"nccl" if device == "cuda" else "gloo"}), batch '
          f'{args.train_batch_size} per process, {args.train_iterations} iterations per '
          'process; images/s counts all processes')
    rows = [[f'{count} process{"es" if count > 1 else ""}', f'{r["images_per_s"]:.2f}',
             f'{r["iteration_s"]:.3f}', f'{r["data_s"]:.3f}', f'{r["wall_s"]:.1f}']
            for count, r in processes.items()]
    print(table(rows, ['processes', 'images/s', 'iteration s', 'data s', 'wall s']))
    ratio = two['images_per_s'] / one['images_per_s']
    print(f'training throughput 2 vs 1 processes: {ratio:.2f}x'
          + (f' (on {os.cpu_count()} CPU cores the processes share the cores: expect about 1x on '
             'a CPU, up to 2x on two GPUs)' if device == 'cpu' else ''))

if __name__ == '__main__':
    sys.exit(run_cli(main))
