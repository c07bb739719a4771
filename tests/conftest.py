import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny, fast schedule: 64 px input, random weights, no data-loading processes.
TINY_TRAIN_ARGS = ['--no-pretrained', '--epochs', '2', '--batch-size', '4', '--input-size', '64',
                   '--workers', '0', '--cfg-options', 'param_scheduler.0.end=5']


def run_script(script, *args, check=True, timeout=600):
    """Run a top-level script as a user would; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f'{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n'
                             f'{result.stderr[-3000:]}')
    return result


@pytest.fixture(scope='session')
def demo_dataset(tmp_path_factory):
    """A prepared 24-patient demo dataset: (pickle path, prepared folder)."""
    from cephalometric.demo_data import write_demo_pickle
    root = tmp_path_factory.mktemp('demo')
    pickle_path = write_demo_pickle(root / 'train_data_pure_depth.pkl', num_patients=24, seed=1)
    prepared = root / 'cephalometric'
    run_script('prepare_cephalometric_data.py', '--input', pickle_path, '--out-dir', prepared)
    return pickle_path, prepared


@pytest.fixture(scope='session')
def trained_run(demo_dataset, tmp_path_factory):
    """Work dir of a 2-epoch tiny training run on the demo dataset (best_MRE.pth inside)."""
    _, prepared = demo_dataset
    work_dir = tmp_path_factory.mktemp('run')
    run_script('train_cephalometric.py', '--data-root', prepared, '--work-dir', work_dir,
               *TINY_TRAIN_ARGS)
    return work_dir
