"""Hostile and careless inputs on the data side: preparing, and reading a prepared dataset.

Each case asserts the exit status (2), the one-line `error: ...` message with no traceback, and what
is left on disk: nothing written, nothing deleted, and no payload in a dataset ever run. Readers are
driven through `run_cli`, as every script drives them; one training run checks the process boundary.
"""
from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import prepare_cephalometric_data as prepare_cli  # python -m pytest from the repository root
from cephalometric.data import reader as dataset_reader
from cephalometric.data.demo import main as demo_main
from cephalometric.data.demo import make_demo_dataframe
from cephalometric.data.writer import metainfo_dict, prepare_dataset
from cephalometric.errors import run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.outputs import MARKER

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> tuple[Path, Path]:
    """(a small pickled demo table, the dataset prepared from it), made once for the module."""
    folder = tmp_path_factory.mktemp('source')
    table = folder / 'table.pkl'
    make_demo_dataframe(num_patients=10, seed=0, image_size=64).to_pickle(table)
    prepare_dataset(table, folder / 'prepared', progress=False)
    return table, folder / 'prepared'


@pytest.fixture
def data_root(source, tmp_path) -> Path:
    """A fresh copy of the prepared dataset that a test may damage."""
    return Path(shutil.copytree(source[1], tmp_path / 'data_root'))


@pytest.fixture
def table(source, tmp_path) -> Path:
    """The pickled table, copied into this test's folder."""
    return Path(shutil.copy(source[0], tmp_path / 'table.pkl'))


def snapshot(folder: Path) -> dict:
    """Every path under `folder` (hidden ones too) -> its bytes, or None for a folder."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob('*'))}


def one_line_error(code: int, capsys, *fragments: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, captured.out, err)
    assert err.startswith('error: ') and '\n' not in err, err
    assert 'Traceback' not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def read_refused(capsys, read, *fragments: str) -> str:
    """Run a reader as a script's main would run it: it must refuse with one line, exit 2."""
    capsys.readouterr()

    def main(argv=None):
        read()
        return 0

    return one_line_error(run_cli(main, []), capsys, *fragments)


def prepare(capsys, *argv) -> int:
    capsys.readouterr()
    return run_cli(prepare_cli.main, [str(a) for a in argv])


def legacy_metainfo_text(names) -> str:
    """metainfo.py exactly as versions before metainfo.json wrote it."""
    lines = ['# MMPose dataset meta for the prepared cephalometric dataset.',
             '# Written by prepare_cephalometric_data.py; load with dict(from_file=<this file>).',
             'dataset_info = dict(',
             "    dataset_name='cephalometric',",
             "    paper_info=dict(author='', title='', container='', year='', homepage=''),",
             '    keypoint_info={']
    for index, name in enumerate(names):
        colour = metainfo_dict(names)['keypoint_info'][index]['color']
        lines.append(f"        {index}: dict(name={name!r}, id={index}, color={colour}, "
                     "type='', swap=''),")
    lines += ['    },', '    skeleton_info={},', f'    joint_weights={[1.0] * len(names)},',
              f'    sigmas={[0.025] * len(names)})', '']
    return '\n'.join(lines)


def make_legacy(root: Path, text: str) -> None:
    """Turn a prepared folder into what an older version (or an attacker) left: metainfo.py only."""
    (root / 'metainfo.json').unlink()
    (root / 'metainfo.py').write_text(text)


def payload(marker: Path) -> str:
    """Python that would leave `marker` behind if anything ever ran it."""
    return (f"__import__('os').system('touch {marker}')\n"
            f"open({str(marker)!r}, 'w').write('ran')\n")


def build_dataset(root: Path, ann_file: str = 'annotations/train.json'):
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from cephalometric.mmpose_plugins.dataset import CephalometricDataset
    return CephalometricDataset(data_root=str(root), ann_file=ann_file, data_mode='topdown',
                                pipeline=[], test_mode=True)


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder nobody may write into. Root ignores permissions, so for root the file-system calls
    that would be refused are refused by a stand-in raising the same PermissionError."""
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        def inside(path) -> bool:
            return folder in Path(os.path.abspath(path)).parents

        real_mkdir, real_mkstemp = pathlib.Path.mkdir, tempfile.mkstemp

        def mkdir(self, *args, **kwargs):
            if inside(self):
                raise PermissionError(errno.EACCES, 'Permission denied', str(self))
            return real_mkdir(self, *args, **kwargs)

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and inside(Path(dir) / 'x'):
                raise PermissionError(errno.EACCES, 'Permission denied', str(dir))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(pathlib.Path, 'mkdir', mkdir)
        monkeypatch.setattr(tempfile, 'mkstemp', mkstemp)
    yield folder
    folder.chmod(0o755)


# --------------------------------------------------------------------------------------------------
# A data root is data: nothing in it runs


def test_metainfo_py_payload_never_runs_and_every_reader_refuses(data_root, tmp_path, capsys):
    marker = tmp_path / 'PAYLOAD_RAN'
    make_legacy(data_root, payload(marker) + legacy_metainfo_text(STANDARD_LANDMARKS))
    before = snapshot(data_root)
    for read in (lambda: dataset_reader.read_landmark_names(str(data_root)),
                 lambda: dataset_reader.read_metainfo(str(data_root)),
                 lambda: build_dataset(data_root)):
        read_refused(capsys, read, 'metainfo.py', 'never run as code', '--overwrite',
                     'prepare_cephalometric_data.py')
    assert not marker.exists()
    assert snapshot(data_root) == before


def test_payload_hidden_inside_the_literal_is_refused(data_root, tmp_path, capsys):
    marker = tmp_path / 'PAYLOAD_RAN'
    text = legacy_metainfo_text(['sella', 'nasion']).replace(
        "dataset_name='cephalometric'",
        f"dataset_name=__import__('os').system('touch {marker}')")
    make_legacy(data_root, text)
    read_refused(capsys, lambda: dataset_reader.read_landmark_names(str(data_root)),
                 'not a plain dataset_info literal')
    assert not marker.exists()


@pytest.mark.parametrize('text', ['dataset_info = dict(', 'dataset_info = {**other}\n',
                                  'x = 1\ndataset_info = {}\n', '\x00garbage'],
                         ids=['syntax error', 'expansion', 'two statements', 'binary'])
def test_metainfo_py_that_is_not_one_literal_is_refused(data_root, capsys, text):
    make_legacy(data_root, text)
    read_refused(capsys, lambda: dataset_reader.read_metainfo(str(data_root)), 'metainfo.py',
                 '--overwrite')


def test_training_refuses_a_payload_data_root_in_one_line(data_root, tmp_path):
    """The whole training script, in its own process: the payload never runs, no work dir."""
    marker = tmp_path / 'PAYLOAD_RAN'
    make_legacy(data_root, payload(marker) + legacy_metainfo_text(STANDARD_LANDMARKS))
    work_dir = tmp_path / 'run'
    result = subprocess.run(
        [sys.executable, str(ROOT / 'train_cephalometric.py'), '--data-root', str(data_root),
         '--work-dir', str(work_dir), '--no-pretrained', '--device', 'cpu'],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'metainfo.py' in lines[0]
    assert not marker.exists() and not work_dir.exists()


def test_metainfo_json_wins_over_a_payload_metainfo_py(data_root, tmp_path):
    marker = tmp_path / 'PAYLOAD_RAN'
    (data_root / 'metainfo.py').write_text(payload(marker))
    assert dataset_reader.read_landmark_names(str(data_root)) == list(STANDARD_LANDMARKS)
    dataset = build_dataset(data_root)
    assert dataset.metainfo['num_keypoints'] == 19 and len(dataset) > 0
    assert not marker.exists()


def test_legacy_metainfo_py_is_read_safely_and_trains_the_same(data_root, source):
    make_legacy(data_root, legacy_metainfo_text(STANDARD_LANDMARKS))
    legacy = dataset_reader.read_metainfo(str(data_root))
    current = dataset_reader.read_metainfo(str(source[1]))
    assert legacy == current
    assert dataset_reader.read_landmark_names(str(data_root)) == list(STANDARD_LANDMARKS)
    dataset = build_dataset(data_root)
    assert dataset.metainfo['keypoint_id2name'][10] == 'Gonion'
    assert dataset.metainfo['flip_indices'] == list(range(19))


@pytest.mark.parametrize('text, fragment', [
    ('{"keypoint_info": {"0": {"name": "a"', 'cannot read'),            # truncated
    ('not json at all', 'cannot read'),
    ('[1, 2, 3]', 'does not hold an object'),
    ('{}', 'has no keypoint_info'),                                      # key-less
    ('{"keypoint_info": {"0": {"name": "a"}}, "joint_weights": [1], "sigmas": [1, 2]}',
     'sigmas'),
    ('{"keypoint_info": {"1": {"name": "a"}}, "joint_weights": [1], "sigmas": [1]}',
     'other than 0 to 0'),
    ('{"keypoint_info": {"0": {"name": "a", "color": "red"}}, "joint_weights": [1], '
     '"sigmas": [1]}', 'colour'),
    ('{"keypoint_info": {"0": {"name": "a", "swap": "b"}}, "joint_weights": [1], '
     '"sigmas": [1]}', 'swap partner'),
], ids=['truncated', 'not json', 'a list', 'key-less', 'wrong counts', 'gap in ids', 'bad colour',
        'unknown swap'])
def test_damaged_metainfo_json_is_one_line(data_root, capsys, text, fragment):
    (data_root / 'metainfo.json').write_text(text)
    before = snapshot(data_root)
    read_refused(capsys, lambda: dataset_reader.read_landmark_names(str(data_root)),
                 'metainfo.json', fragment, '--overwrite')
    assert snapshot(data_root) == before


def test_data_root_without_metainfo_names_the_fix(data_root, capsys):
    (data_root / 'metainfo.json').unlink()
    read_refused(capsys, lambda: dataset_reader.read_landmark_names(str(data_root)),
                 'missing metainfo.json', 'prepare_cephalometric_data.py')


# --------------------------------------------------------------------------------------------------
# Damaged annotation files


def _truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[:len(text) // 2])


def _drop_key(key: str):
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        del data[key]
        path.write_text(json.dumps(data))
    return damage


def _short_keypoints(path: Path) -> None:
    data = json.loads(path.read_text())
    data['annotations'][0]['keypoints'] = data['annotations'][0]['keypoints'][:-3]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize('damage, fragment', [
    (_truncate, 'not readable JSON'),
    (lambda path: path.write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00'), 'not readable JSON'),
    (lambda path: path.write_text('{}'), 'has no images, annotations, categories'),
    (_drop_key('annotations'), 'has no annotations'),
    (lambda path: path.write_text('[]'), 'does not hold a JSON object'),
    (_short_keypoints, 'keypoint numbers'),
], ids=['truncated', 'binary', 'empty object', 'key-less', 'a list', 'short keypoints'])
def test_damaged_annotations_are_one_line_for_load_split(data_root, capsys, damage, fragment):
    damage(data_root / 'annotations' / 'val.json')
    before = snapshot(data_root)
    read_refused(capsys, lambda: dataset_reader.load_split(str(data_root), 'val'),
                 'val.json', fragment, '--overwrite')
    read_refused(capsys, lambda: dataset_reader.mean_shape_baseline(str(data_root), 'val'),
                 'val.json', fragment)
    assert snapshot(data_root) == before


@pytest.mark.parametrize('damage', [_truncate, _drop_key('images')], ids=['truncated', 'key-less'])
def test_damaged_annotations_are_one_line_for_the_mmpose_dataset(data_root, capsys, damage):
    damage(data_root / 'annotations' / 'train.json')
    read_refused(capsys, lambda: build_dataset(data_root), 'train.json', '--overwrite')


# --------------------------------------------------------------------------------------------------
# prepare_cephalometric_data.py: the output folder


def test_out_dir_in_a_read_only_folder(table, read_only, tmp_path, capsys):
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', table, '--out-dir', read_only / 'prepared')
    one_line_error(code, capsys, 'cannot write', str(read_only), 'permission')
    assert snapshot(tmp_path) == before


def test_out_dir_that_is_a_file(table, tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('precious')
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', table, '--out-dir', tmp_path / 'notes.txt', '--overwrite')
    one_line_error(code, capsys, 'not a folder')
    assert snapshot(tmp_path) == before


def test_out_dir_under_a_file(table, tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('precious')
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', table, '--out-dir', tmp_path / 'notes.txt' / 'prepared')
    one_line_error(code, capsys, 'cannot write')
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('target', ['parent', 'input itself'])
def test_out_dir_that_holds_or_is_the_input_is_never_replaced(table, tmp_path, capsys, target):
    (tmp_path / MARKER).write_text('{}')     # even a folder that looks like ours
    out = tmp_path if target == 'parent' else table
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', table, '--out-dir', out, '--overwrite')
    one_line_error(code, capsys, 'would replace', 'choose another --out-dir')
    assert snapshot(tmp_path) == before


def test_out_dir_that_holds_the_ruler_json_is_never_replaced(table, tmp_path, capsys):
    out = tmp_path / 'prepared'
    out.mkdir()
    (out / MARKER).write_text('{}')
    (out / 'ruler.json').write_text('{}')
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', table, '--out-dir', out, '--overwrite', '--ruler-json',
                   out / 'ruler.json')
    one_line_error(code, capsys, 'would replace')
    assert snapshot(tmp_path) == before


def test_unrelated_folder_with_overwrite_is_untouched(table, tmp_path, capsys):
    out = tmp_path / 'my_documents'
    (out / 'annotations').mkdir(parents=True)            # looking like a dataset is not enough
    (out / 'thesis.docx').write_text('precious')
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', table, '--out-dir', out, '--overwrite')
    one_line_error(code, capsys, 'not written by this project', '--overwrite will not delete')
    assert snapshot(tmp_path) == before


def test_link_to_a_prepared_dataset_is_not_followed(table, data_root, tmp_path, capsys):
    link = tmp_path / 'link'
    link.symlink_to(data_root)
    before = snapshot(data_root)
    code = prepare(capsys, '--input', table, '--out-dir', link, '--overwrite')
    one_line_error(code, capsys, 'not a folder')
    assert link.is_symlink() and snapshot(data_root) == before


def test_existing_dataset_without_overwrite_is_kept(table, data_root, capsys):
    before = snapshot(data_root)
    code = prepare(capsys, '--input', table, '--out-dir', data_root)
    one_line_error(code, capsys, 'already exists', '--overwrite')
    assert snapshot(data_root) == before


def test_dataset_from_an_older_version_is_replaced_with_overwrite(table, data_root, tmp_path,
                                                                  capsys):
    """An old dataset (summary.json, metainfo.py, no marker) is ours: --overwrite replaces it."""
    make_legacy(data_root, legacy_metainfo_text(STANDARD_LANDMARKS))
    (data_root / MARKER).unlink()
    assert prepare(capsys, '--input', table, '--out-dir', data_root, '--overwrite') == 0
    names = sorted(p.name for p in data_root.iterdir())
    assert names == [MARKER, 'annotations', 'images', 'metainfo.json', 'summary.json']
    assert dataset_reader.read_landmark_names(str(data_root)) == list(STANDARD_LANDMARKS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data_root', 'table.pkl']


# --------------------------------------------------------------------------------------------------
# prepare_cephalometric_data.py: the input


@pytest.mark.parametrize('content, fragment', [
    ({'patient_id': [1, 2]}, 'holds a dict, not a table'),
    (np.zeros((3, 3)), 'holds a ndarray, not a table'),
    (pd.DataFrame({'patient_id': [1, 2]}), 'no landmark columns'),
], ids=['dict', 'array', 'table without landmarks'])
def test_pickle_that_is_not_the_table(tmp_path, capsys, content, fragment):
    path = tmp_path / 'input.pkl'
    pd.to_pickle(content, path)
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', path, '--out-dir', tmp_path / 'prepared')
    one_line_error(code, capsys, fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('data', [b'', b'\x80\x04garbage', b'PK\x03\x04 a zip, not a pickle'],
                         ids=['empty', 'truncated pickle', 'other format'])
def test_file_that_is_not_a_pickle(tmp_path, capsys, data):
    path = tmp_path / 'input.pkl'
    path.write_bytes(data)
    before = snapshot(tmp_path)
    code = prepare(capsys, '--input', path, '--out-dir', tmp_path / 'prepared')
    one_line_error(code, capsys, 'not a readable pandas pickle', 'DataFrame.to_pickle')
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# The demo-data generator


def test_demo_pickle_into_a_read_only_folder(read_only, tmp_path, capsys):
    before = snapshot(tmp_path)
    code = run_cli(demo_main, ['--out', str(read_only / 'demo.pkl'), '--num-patients', '2',
                               '--image-size', '32'])
    one_line_error(code, capsys, 'cannot write')
    assert snapshot(tmp_path) == before


def test_demo_pickle_onto_a_folder(tmp_path, capsys):
    (tmp_path / 'data').mkdir()
    code = run_cli(demo_main, ['--out', str(tmp_path / 'data'), '--num-patients', '2'])
    one_line_error(code, capsys, 'is a folder')
    assert [p.name for p in tmp_path.iterdir()] == ['data']


def test_native_stderr_silencing_is_descriptor_2_whatever_sys_stderr_is(monkeypatch, tmp_path):
    """The review server's threads read images at once; the first one's sys.stderr (under pytest
    a capture file, closed when its test ends) must not be what the last one restores."""
    from cephalometric.data import images
    before = os.fstat(2)
    capture = open(tmp_path / 'capture.txt', 'w')
    monkeypatch.setattr(sys, 'stderr', capture)
    outer = images._native_stderr_silenced()
    outer.__enter__()
    assert os.path.samestat(os.fstat(2), os.stat(os.devnull))
    inner = images._native_stderr_silenced()   # another thread's read
    inner.__enter__()
    outer.__exit__(None, None, None)
    capture.close()
    inner.__exit__(None, None, None)
    assert os.path.samestat(os.fstat(2), before)


def test_native_stderr_silencing_runs_without_a_descriptor_2(monkeypatch):
    """A process started with descriptor 2 closed (a daemon, some schedulers) still reads images:
    there is nothing to silence, and nothing is opened in its place."""
    import resource

    from cephalometric.data import images
    # The highest number the process may hold: new files take the lowest free one, so no other
    # thread's file lands on it during the test.
    free_fd = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536) - 1
    with pytest.raises(OSError):
        os.fstat(free_fd)
    monkeypatch.setattr(images, '_STDERR_FD', free_fd)
    with images._native_stderr_silenced():
        with pytest.raises(OSError):   # nothing was put in its place
            os.fstat(free_fd)
    with pytest.raises(OSError):
        os.fstat(free_fd)
