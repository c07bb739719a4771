"""Multi-process training on CPU: 2 processes with the gloo backend, as torchrun and srun run them.

CPU processes run the same Runner, sampler, metric collection and checkpoint code as GPUs with
nccl; only the backend differs. Checked here: the validation of a 2-process run sees every image
once and its MRE equals evaluate.py's (--no-refine: the landmark model it validates) on the saved
checkpoint; rank 0 alone writes the outputs;
every process has its own seed; a SIGKILL of the launcher mid-epoch loses at most that epoch;
the slurm path with the variables srun sets.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cephalometric.errors import UserError
from tests.helpers import LEARNING_ARGS, ROOT, SUBPROCESS_TIMEOUT, TINY_TRAIN_ARGS, run_script

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run']
TRAIN = os.path.join(ROOT, 'train_cephalometric.py')
OUTPUTS = {'best_MRE.json', 'best_MRE.pth', 'training_curves.png', 'resolved_config.py',
           'last_checkpoint'}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def torchrun(*args, stdout=subprocess.PIPE):
    command = [*TORCHRUN, '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port',
               str(free_port()), TRAIN, '--launcher', 'pytorch', *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, text=True, stdout=stdout, stderr=subprocess.STDOUT)


def finish(process) -> str:
    output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == 0, output[-4000:]
    return output


def num_images(prepared, split) -> int:
    return len(json.loads((prepared / 'annotations' / f'{split}.json').read_text())['images'])


def test_two_processes_validate_every_image_once_and_agree_with_evaluate(learned_run, tmp_path):
    prepared, learned = learned_run
    work_dir = tmp_path / 'wd'
    # a short fine-tune of a model that has learned: sharp heatmap peaks, so the two prediction
    # paths cannot differ by an argmax that jumps on rounding
    fine_tune = [a for a in LEARNING_ARGS if a != '--no-pretrained']
    fine_tune[fine_tune.index('--epochs') + 1] = '1'
    fine_tune[fine_tune.index('--batch-size') + 1] = '4'
    fine_tune[fine_tune.index('--lr') + 1] = '2e-4'
    fine_tune[fine_tune.index('--framing-epochs') + 1] = '1'   # the framing run, distributed too
    fine_tune[fine_tune.index('--refine-epochs') + 1] = '1'    # and the refinement run
    output = finish(torchrun('--data-root', prepared, '--work-dir', work_dir, '--load-from',
                             learned / 'best_MRE.pth', *fine_tune))
    val_images = num_images(prepared, 'val')
    assert f'Evaluated {val_images} images' in output  # all of them, each once
    assert '2 processes (pytorch, gloo); seeds per process: 0, 1' in output
    # rank 0 alone reports and writes
    assert output.count('validation MRE') == 1 and output.count('best checkpoint:') == 1
    assert output.count('new best MRE') == 1
    assert output.count('framing model: 1 epochs with zoom-out, stored in best_MRE.pth') == 1
    assert output.count('refinement model (1 epochs, patch') == 1   # distributed too
    entries = set(os.listdir(work_dir))
    assert OUTPUTS | {'epoch_1.pth', 'framing', 'refine'} <= entries
    # one log folder, and the framing and refinement runs' folders
    assert len([e for e in entries if (work_dir / e).is_dir()]) == 3
    assert json.loads((work_dir / 'best_MRE.json').read_text())['framing_model']['epochs'] == 1
    assert not os.path.exists(os.path.join(ROOT, '.dist_test'))  # results gathered in memory
    assert "backend='gloo'" in (work_dir / 'resolved_config.py').read_text()

    logged = json.loads((work_dir / 'best_MRE.json').read_text())['best_score']
    # validation measures the landmark model; evaluate.py --no-refine predicts with it alone
    run_script('evaluate.py', '--checkpoint', work_dir / 'best_MRE.pth', '--data-root', prepared,
               '--split', 'val', '--out-dir', tmp_path / 'eval', '--device', 'cpu',
               '--no-refine')
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    evaluated = metrics['overall']['MRE']
    print(f'2-process validation MRE {logged:.4f} px, evaluate.py {evaluated:.4f} px '
          f'({val_images} images)')
    assert metrics['num_images'] == val_images
    assert abs(logged - evaluated) <= 0.01


def _training_processes(work_dir) -> list:
    """PIDs of processes whose command line names `work_dir`."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as stream:
                if str(work_dir).encode() in stream.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_sigkill_of_the_launcher_mid_epoch_then_resume(demo_dataset, tmp_path):
    _, prepared = demo_dataset
    work_dir = tmp_path / 'killed'
    args = ['--data-root', prepared, '--work-dir', work_dir, '--no-pretrained', '--epochs', '3',
            *TINY_TRAIN_ARGS[3:]]
    launcher = torchrun(*args, stdout=open(tmp_path / 'killed.log', 'w'))
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while not (work_dir / 'epoch_1.pth').is_file() or not (work_dir / 'last_checkpoint').is_file():
        assert launcher.poll() is None, (tmp_path / 'killed.log').read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    # the workers follow their launcher instead of training on into the work dir
    while _training_processes(work_dir):
        assert time.time() < deadline
        time.sleep(0.2)
    assert not (work_dir / 'epoch_3.pth').exists()

    output = finish(torchrun(*args, '--resume'))
    resumed_epoch = int(output.split('resumed epoch: ')[1].split(',')[0])
    assert resumed_epoch >= 1
    assert (work_dir / 'epoch_3.pth').is_file() and (work_dir / 'best_MRE.pth').is_file()
    assert output.count('validation MRE') == 1


@pytest.mark.slow
def test_slurm_variables_start_two_processes(demo_dataset, tmp_path):
    """What srun sets, faked for two processes on this machine (no scontrol: a plain node name)."""
    _, prepared = demo_dataset
    work_dir = tmp_path / 'slurm'
    port = free_port()
    processes = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items()
               if k not in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
        env.update(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS='2',
                   SLURM_NTASKS_PER_NODE='2', SLURM_NODELIST='localhost',
                   SLURM_JOB_ID='4242', MASTER_PORT=str(port))
        processes.append(subprocess.Popen(
            [sys.executable, TRAIN, '--launcher', 'slurm', '--data-root', str(prepared),
             '--work-dir', str(work_dir), '--seed', '3', *TINY_TRAIN_ARGS[:2], '1',
             *TINY_TRAIN_ARGS[3:]],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert process.returncode == 0, stderr[-4000:]
        outputs.append((stdout, stderr))
    rank0, rank1 = ('\n'.join(output) for output in outputs)
    val_images = num_images(prepared, 'val')
    assert val_images % 2 == 1  # uneven shares: 2 and 1 images
    assert f'Evaluated {val_images} images' in rank0
    assert '2 processes (slurm, gloo); seeds per process: 3, 4' in rank0
    assert 'validation MRE' in rank0 and 'validation MRE' not in rank1
    assert 'Evaluated' not in rank1
    assert OUTPUTS | {'epoch_1.pth'} <= set(os.listdir(work_dir))


@pytest.mark.parametrize('variables, fragment', [
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '2', 'SLURM_NODELIST': 'node[01-02]'}, 'MASTER_ADDR'),
    ({'SLURM_PROCID': 'x', 'SLURM_NTASKS': '2', 'SLURM_NODELIST': 'n1'}, 'SLURM_PROCID'),
    ({'SLURM_NTASKS': '2', 'SLURM_NODELIST': 'n1'}, 'missing SLURM_PROCID'),
])
def test_slurm_variables_that_do_not_add_up_are_one_line(variables, fragment, monkeypatch):
    from cephalometric.training import run as training
    for name in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST', 'SLURM_LOCALID', 'MASTER_ADDR',
                 'PATH'):
        monkeypatch.delenv(name, raising=False)  # no PATH: no scontrol
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=fragment):
        training.read_launcher('slurm')
