"""Session fixtures (a random-weight model, a prepared demo dataset, trained runs), the `slow`
marking, and one thread per pytest-xdist worker."""
import os

import pytest

from tests.helpers import LEARNING_ARGS, TINY_TRAIN_ARGS, run_script

# `make test-fast` runs a pytest-xdist worker per core: with PyTorch's usual one thread per core
# in each, their OpenMP threads wait on each other and the suite gets no faster. Set before any
# test imports torch; tools the tests start inherit it.
if os.environ.get('PYTEST_XDIST_WORKER'):
    for variable in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ.setdefault(variable, '1')

# A test that uses one of these fixtures needs a model trained first: it is `slow`, as is every
# test marked so by hand (the ones that train or drive the browser themselves).
TRAINING_FIXTURES = {'trained_run', 'learned_run', 'rgbd_run'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope='session')
def random_model(tmp_path_factory):
    """A published random-weight checkpoint at 64 px ('pth') and its ONNX export ('onnx'), paths
    as str, with the 'cfg', 'dataset_meta' and 'state' (state dict) they were made from."""
    from cephalometric.model.checkpoint import published_meta, write_published_checkpoint
    from cephalometric.prediction.onnx import export_onnx
    from cephalometric.prediction.predictor import LandmarkPredictor
    from cephalometric.training.config import random_weight_model

    folder = tmp_path_factory.mktemp('random_model')
    cfg, dataset_meta, state = random_weight_model(64)
    pth, onnx_path = str(folder / 'model.pth'), str(folder / 'model.onnx')
    write_published_checkpoint(pth, published_meta(cfg, dataset_meta), state)
    predictor = LandmarkPredictor(pth, device='cpu')
    export_onnx(predictor.network.net, predictor.settings, onnx_path)
    return dict(pth=pth, onnx=onnx_path, cfg=cfg, dataset_meta=dataset_meta, state=state)


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
