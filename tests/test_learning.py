"""The model learns: a few CPU minutes on the demo data beat the mean-shape baseline clearly."""
import json

import pytest
from conftest import run_script

# The demo recipe (Makefile `demo`) on fewer images and epochs: ~100 steps at 96 px.
LEARNING_ARGS = ['--no-pretrained', '--epochs', '7', '--batch-size', '8', '--input-size', '96',
                 '--sigma', '1.5', '--lr', '2e-3', '--workers', '0', '--seed', '0',
                 '--cfg-options', 'param_scheduler.0.end=20']


def test_short_cpu_run_clearly_beats_the_mean_shape(tmp_path):
    from cephalometric.demo_data import write_demo_pickle
    from cephalometric.prepared import mean_shape_baseline

    pickle_path = write_demo_pickle(tmp_path / 'demo.pkl', num_patients=150, seed=3)
    prepared = tmp_path / 'prepared'
    run_script('prepare_cephalometric_data.py', '--input', pickle_path, '--out-dir', prepared)
    run_script('train_cephalometric.py', '--data-root', prepared, '--work-dir', tmp_path / 'run',
               *LEARNING_ARGS)
    best = json.loads((tmp_path / 'run' / 'best_MRE.json').read_text())
    baseline = mean_shape_baseline(str(prepared), 'val')['MRE']
    print(f'validation MRE {best["best_score"]:.2f} px vs mean shape {baseline:.2f} px')
    assert baseline > 5.0  # the task is not trivial: faces vary
    assert best['best_score'] < 0.7 * baseline
