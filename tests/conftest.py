import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny, fast schedule: 64 px input, random weights, no data-loading processes, no framing model.
TINY_TRAIN_ARGS = ['--no-pretrained', '--epochs', '2', '--batch-size', '4', '--input-size', '64',
                   '--workers', '0', '--framing-epochs', '0', '--warmup-iters',
                   '5']


# No test runs near this long even on a busy machine (the slowest, test_learning, takes about two
# minutes on 2 quiet cores): the limit only ends a run that hangs, it never times a test.
SUBPROCESS_TIMEOUT = 3600

# The learning recipe (Makefile `demo` on fewer images and epochs): ~100 steps at 96 px, then a
# 2-epoch framing model (zoom-out), so the tests of automatic framing use both networks.
LEARNING_ARGS = ['--no-pretrained', '--epochs', '7', '--framing-epochs', '2', '--batch-size', '8',
                 '--input-size', '96', '--sigma', '1.5', '--lr', '2e-3', '--workers', '0',
                 '--seed', '0', '--warmup-iters', '20']


def run_script(script, *args, check=True, timeout=SUBPROCESS_TIMEOUT):
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
    from cephalometric.data.demo import write_demo_pickle
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


@pytest.fixture(scope='session')
def learned_run(tmp_path_factory):
    """A model that has learned (the recipe above on 150 demo patients): (prepared folder, work
    dir). Shared by test_learning and test_distributed, which fine-tunes it."""
    from cephalometric.data.demo import write_demo_pickle
    root = tmp_path_factory.mktemp('learned')
    pickle_path = write_demo_pickle(root / 'demo.pkl', num_patients=150, seed=3)
    prepared = root / 'prepared'
    run_script('prepare_cephalometric_data.py', '--input', pickle_path, '--out-dir', prepared)
    run_script('train_cephalometric.py', '--data-root', prepared, '--work-dir', root / 'run',
               *LEARNING_ARGS)
    return prepared, root / 'run'
