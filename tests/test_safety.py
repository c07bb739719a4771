"""Nothing a user owns is overwritten or deleted, and an interrupted run leaves no trace.

Issue classes: outputs written over the run's inputs, --overwrite deleting the user's own files,
runs stopped by SIGTERM (or killed) leaving temporaries, a failed training start deleting what
another program saved in a shared folder.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cephalometric.errors import UserError, run_cli
from cephalometric.outputs import (
    MARKER,
    check_output_folder,
    foreign_entries,
    staged_output_folder,
)
from tests.helpers import ROOT

PREPARE = str(Path(ROOT) / 'prepare_cephalometric_data.py')


def leftovers(folder):
    """Temporaries of this project anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*')
                  if '.tmp-' in p.name or '.old-' in p.name)


@pytest.fixture(scope='module')
def demo_pickle(tmp_path_factory):
    from cephalometric.data.demo import write_demo_pickle
    return write_demo_pickle(tmp_path_factory.mktemp('pickle') / 'demo.pkl', num_patients=12,
                             seed=2)


def prepare(*argv):
    import prepare_cephalometric_data
    return run_cli(prepare_cephalometric_data.main, [str(a) for a in argv])


@pytest.fixture
def dataset(demo_pickle, tmp_path):
    out = tmp_path / 'prepared'
    assert prepare('--input', demo_pickle, '--out-dir', out) == 0
    return out


# -- --overwrite replaces only what this project wrote -------------------------------------------

def test_overwrite_keeps_a_dataset_that_holds_a_file_of_the_users(dataset, demo_pickle, capsys):
    (dataset / 'my_notes.txt').write_text('mine')
    capsys.readouterr()
    assert prepare('--input', demo_pickle, '--out-dir', dataset, '--overwrite') == 2
    err = capsys.readouterr().err
    assert "'my_notes.txt'" in err and 'Traceback' not in err and len(err.splitlines()) == 1
    assert (dataset / 'my_notes.txt').read_text() == 'mine'
    (dataset / 'my_notes.txt').unlink()
    assert prepare('--input', demo_pickle, '--out-dir', dataset, '--overwrite') == 0


def test_the_marker_lists_what_was_written(dataset):
    listed = json.loads((dataset / MARKER).read_text())['files']
    assert 'summary.json' in listed and 'annotations/train.json' in listed
    assert foreign_entries(dataset) == []
    (dataset / 'images' / 'extra.png').write_bytes(b'x')
    assert foreign_entries(dataset) == ['images/extra.png']


def test_an_old_dataset_marked_by_summary_json(dataset, demo_pickle, capsys):
    """Datasets from before the marker: judged by the layout prepare wrote, nothing more."""
    (dataset / MARKER).unlink()
    (dataset / 'thesis.docx').write_text('precious')
    assert prepare('--input', demo_pickle, '--out-dir', dataset, '--overwrite') == 2
    assert "'thesis.docx'" in capsys.readouterr().err
    assert (dataset / 'thesis.docx').read_text() == 'precious'
    (dataset / 'thesis.docx').unlink()
    assert prepare('--input', demo_pickle, '--out-dir', dataset, '--overwrite') == 0
    assert (dataset / MARKER).is_file()


def test_an_unrelated_folder_with_a_summary_json_is_not_replaced(tmp_path, demo_pickle, capsys):
    folder = tmp_path / 'results'
    folder.mkdir()
    (folder / 'summary.json').write_text('{"my": "summary"}')
    assert prepare('--input', demo_pickle, '--out-dir', folder, '--overwrite') == 2
    assert 'not written by this project' in capsys.readouterr().err
    assert (folder / 'summary.json').read_text() == '{"my": "summary"}'


def test_an_old_evaluation_folder_with_a_users_file(tmp_path):
    from cephalometric.evaluation.evaluate import LEGACY_LAYOUTS
    folder = tmp_path / 'eval_test'
    folder.mkdir()
    (folder / MARKER).write_text('{"written_by": "evaluate"}\n')   # 0.3: no file list
    for name in ('metrics.json', 'report.md', 'per_landmark.png'):
        (folder / name).write_text('x')
    check_output_folder(folder, overwrite=True, legacy_markers=LEGACY_LAYOUTS)
    (folder / 'my_notes.txt').write_text('mine')
    with pytest.raises(UserError, match="'my_notes.txt'"):
        check_output_folder(folder, overwrite=True, legacy_markers=LEGACY_LAYOUTS)


def test_a_file_saved_into_the_folder_while_the_run_works_stops_the_swap(tmp_path):
    out = tmp_path / 'out'
    with staged_output_folder(out, tool='test') as staging:
        (staging / 'a.txt').write_text('first')
    check_output_folder(out, overwrite=True)
    with pytest.raises(UserError, match="gained 'late.txt'"):
        with staged_output_folder(out, tool='test') as staging:
            (staging / 'a.txt').write_text('second')
            (out / 'late.txt').write_text('saved by another program')
    assert (out / 'late.txt').read_text() == 'saved by another program'
    assert (out / 'a.txt').read_text() == 'first' and leftovers(tmp_path) == []


# -- outputs are never the run's inputs ----------------------------------------------------------

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """A random-weight checkpoint, its ONNX pair with a framing model, a photo and its depth."""
    import cv2

    import benchmark
    from cephalometric.model.checkpoint import attach_framing_model, load_published
    from cephalometric.prediction.export import export_checked
    root = tmp_path_factory.mktemp('models')
    pth = benchmark.random_checkpoint(str(root / 'best_MRE.pth'), 64)
    # with a framing model (the same weights), so that its ONNX export is a pair
    attach_framing_model(pth, load_published(pth).state_dict, {'epochs': 1})
    export_checked(pth, str(root / 'model.onnx'))
    photo = root / 'photo.png'
    cv2.imwrite(str(photo), np.full((96, 80, 3), 128, np.uint8))
    np.save(root / 'photo.npy', np.ones((96, 80), np.float32))
    return root


@pytest.mark.parametrize('checkpoint, target', [
    ('best_MRE.pth', 'best_MRE.pth'), ('model.onnx', 'model.onnx'),
    ('model.onnx', 'model.framing.onnx'), ('best_MRE.pth', 'photo.npy')])
@pytest.mark.parametrize('option', ['--json', '--csv'])
def test_inference_never_writes_over_what_it_reads(models, checkpoint, target, option, capsys):
    from cephalometric.prediction.inference import main
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    argv = ['--checkpoint', str(models / checkpoint), '--img-path', str(models / 'photo.png'),
            '--no-draw', '--bbox', 'full', option, str(models / target)]
    if target.endswith('.npy'):
        argv += ['--depth-path', str(models / 'photo.npy')]
    capsys.readouterr()
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    assert 'which this run reads' in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before


def test_export_never_writes_over_its_checkpoint(models, tmp_path, capsys):
    import export_onnx
    copy = tmp_path / 'model.onnx'
    shutil.copy(models / 'best_MRE.pth', copy)    # a checkpoint named like the output
    before = copy.read_bytes()
    assert run_cli(export_onnx.main, ['--checkpoint', str(copy), '--out', str(copy)]) == 2
    assert 'which this run reads' in capsys.readouterr().err
    assert copy.read_bytes() == before


def test_training_refuses_a_work_dir_that_holds_its_load_from(models, demo_pickle, tmp_path,
                                                               capsys):
    from cephalometric.training.run import train
    data_root = tmp_path / 'data'
    assert prepare('--input', demo_pickle, '--out-dir', data_root) == 0
    work_dir = tmp_path / 'wd'
    work_dir.mkdir()
    shutil.copy(models / 'best_MRE.pth', work_dir / 'best_MRE.pth')
    before = (work_dir / 'best_MRE.pth').read_bytes()
    capsys.readouterr()
    for argv in (['--work-dir', work_dir, '--load-from', work_dir / 'best_MRE.pth'],
                 ['--work-dir', data_root / 'run', '--no-pretrained']):
        code = run_cli(train, ['--data-root', str(data_root), '--epochs', '1', '--input-size',
                               '64', '--workers', '0'] + [str(a) for a in argv])
        errors = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
        assert code == 2 and len(errors) == 1 and errors[0].startswith('error: --work-dir')
    assert (work_dir / 'best_MRE.pth').read_bytes() == before
    assert sorted(os.listdir(work_dir)) == ['best_MRE.pth']
    assert not (data_root / 'run').exists()


def test_a_failed_start_keeps_what_another_program_saved_meanwhile(demo_pickle, tmp_path, capsys,
                                                                   monkeypatch):
    from cephalometric.training import run
    data_root = tmp_path / 'data'
    assert prepare('--input', demo_pickle, '--out-dir', data_root) == 0
    shared = tmp_path / 'shared'
    shared.mkdir()
    (shared / 'notes.txt').write_text('keep me')
    real = run._build_runner

    def saving_meanwhile(cfg):
        real(cfg)     # the Runner has made its log folder and config copy by now
        (shared / 'saved_meanwhile.txt').write_text('another program')
        raise UserError('stopped for the test')
    monkeypatch.setattr(run, '_build_runner', saving_meanwhile)
    code = run_cli(run.train, ['--data-root', str(data_root), '--work-dir', str(shared),
                               '--no-pretrained', '--epochs', '1', '--input-size', '64',
                               '--workers', '0', '--framing-epochs', '0'])
    assert code == 2 and 'stopped for the test' in capsys.readouterr().err
    assert sorted(os.listdir(shared)) == ['notes.txt', 'saved_meanwhile.txt']


# -- interrupted runs ----------------------------------------------------------------------------

def _terminate_when(process, ready, limit=300.0):
    """SIGTERM `process` once `ready()` is true; the exit status and stderr."""
    deadline = time.monotonic() + limit
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, 'the run ended before it could be interrupted'
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=limit)
    return process.returncode, err


@pytest.mark.slow   # a long prepare, to be stopped half-way
def test_sigterm_during_prepare_leaves_the_old_dataset_and_no_temporaries(tmp_path):
    from cephalometric.data.demo import write_demo_pickle
    big = write_demo_pickle(tmp_path / 'big.pkl', num_patients=400, seed=4)
    out = tmp_path / 'prepared'
    assert prepare('--input', big, '--out-dir', out) == 0
    summary = (out / 'summary.json').read_bytes()
    process = subprocess.Popen([sys.executable, PREPARE, '--input', str(big), '--out-dir',
                                str(out), '--overwrite'], cwd=ROOT, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    def staged():   # well into writing the images
        return any(p.name.startswith('.prepared.tmp-') and len(list((p / 'images').glob('*.png')))
                   > 20 for p in tmp_path.iterdir())
    code, err = _terminate_when(process, staged)
    assert code == 143 and 'Traceback' not in err, err
    assert (out / 'summary.json').read_bytes() == summary
    assert leftovers(tmp_path) == []


@pytest.mark.slow   # a long inference, to be stopped half-way
def test_sigterm_during_inference_leaves_earlier_outputs_and_no_temporaries(models, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for i in range(300):
        shutil.copy(models / 'photo.png', photos / f'p{i:03d}.png')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'landmarks.json').write_text('earlier results')
    process = subprocess.Popen(
        [sys.executable, str(Path(ROOT) / 'inference.py'), '--checkpoint',
         str(models / 'best_MRE.pth'), '--img-path', str(photos), '--bbox', 'full',
         '--out-dir', str(out), '--json', str(out / 'landmarks.json'), '--csv',
         str(out / 'table.csv'), '--device', 'cpu'], cwd=ROOT, stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True)
    code, err = _terminate_when(process, lambda: len(leftovers(out)) > 3)
    assert code == 143 and 'Traceback' not in err, err
    assert (out / 'landmarks.json').read_text() == 'earlier results'
    assert sorted(os.listdir(out)) == ['landmarks.json'] and leftovers(tmp_path) == []


def _dead_pid():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_the_next_run_removes_what_a_killed_run_left(models, tmp_path):
    from cephalometric.prediction.inference import main
    pid = _dead_pid()
    stale = tmp_path / f'.tmp-{pid}-abcdlandmarks.json'
    stale.write_text('half')
    alive = tmp_path / f'.tmp-{os.getpid()}-mine.json'     # a running process's: left alone
    alive.write_text('in use')
    assert run_cli(main, ['--checkpoint', str(models / 'best_MRE.pth'), '--img-path',
                          str(models / 'photo.png'), '--no-draw', '--bbox', 'full', '--json',
                          str(tmp_path / 'landmarks.json')]) == 0
    assert not stale.exists() and alive.exists()


def test_a_previous_version_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    pid = _dead_pid()
    retired = tmp_path / f'.results.old-{pid}-1234abcd'
    retired.mkdir()
    (retired / 'metrics.json').write_text('the previous results')
    with staged_output_folder(tmp_path / 'other', tool='test') as staging:
        (staging / 'x.txt').write_text('x')
    assert (tmp_path / 'results' / 'metrics.json').read_text() == 'the previous results'
    assert leftovers(tmp_path) == []
