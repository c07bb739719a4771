"""Session fixtures (a prepared demo dataset, trained runs) and the `slow` marking."""
import pytest

from tests.helpers import LEARNING_ARGS, TINY_TRAIN_ARGS, run_script

# A test that uses one of these fixtures needs a model trained first: it is `slow`, as is every
# test marked so by hand (the ones that train or drive the browser themselves).
TRAINING_FIXTURES = {'trained_run', 'learned_run', 'rgbd_run'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.slow)


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
