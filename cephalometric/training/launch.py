"""One or several training processes: the device, deterministic kernels, the launcher's process
group (`--launcher pytorch` under torchrun, `slurm` under srun; nccl on GPUs, gloo on CPUs) and its
orderly end."""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from cephalometric.errors import UserError, first_line

BACKEND_KEY = 'env_cfg.dist_cfg.backend'


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


def select_device(device: str, distributed: bool = False) -> None:
    """Hide CUDA for --device cpu, or every GPU but N for cuda:N (one process: MMEngine trains
    on the first visible GPU); must run before torch initialises CUDA."""
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    elif device.startswith('cuda:'):
        if distributed:
            raise UserError(f'--device {device} names one GPU, but with several processes each '
                            'takes its own (LOCAL_RANK); use --device cuda, or choose the GPUs '
                            'with CUDA_VISIBLE_DEVICES')
        index = int(device.split(':')[1])
        visible = os.environ.get('CUDA_VISIBLE_DEVICES')
        if visible:   # N counts the GPUs already made visible, as torch counts them
            ids = [v for v in visible.split(',') if v.strip()]
            if index >= len(ids):
                raise UserError(f'--device {device} but only {len(ids)} GPU(s) are visible '
                                f'(CUDA_VISIBLE_DEVICES={visible}); use cuda:0 or cpu')
            os.environ['CUDA_VISIBLE_DEVICES'] = ids[index]
        else:
            os.environ['CUDA_VISIBLE_DEVICES'] = str(index)


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
        reason = first_line(error)
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
