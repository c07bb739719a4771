"""Hostile and careless inputs to the prediction side: inference.py, evaluate.py, export_onnx.py.

Every case asserts the exit status (2 for a refusal, 0 where the tool is meant to work), the single
`error: ...` line with no traceback, and what is left on disk. The tools run in-process through
`run_cli(main, argv)` on a tiny random-weight checkpoint (64 px input), so the module is fast;
only the ONNX Runtime telemetry check needs its own process (the switch must precede the import).
"""
import json
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest

import evaluate
import export_onnx
import inference
from cephalometric.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IS_ROOT = hasattr(os, 'geteuid') and os.geteuid() == 0


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def models(random_model, tmp_path_factory):
    """{'pth': published random-weight checkpoint, 'legacy': same with the old Python-text cfg,
    'onnx': its export, plus hostile variants}; all paths as str."""
    import torch

    from cephalometric.model.checkpoint import published_meta

    folder = tmp_path_factory.mktemp('models')
    cfg, dataset_meta, state = random_model['cfg'], random_model['dataset_meta'], random_model[
        'state']
    paths = {name: str(folder / f'{name}.pth') for name in
             ('legacy', 'evil_cfg', 'evil_type', 'evil_init', 'evil_pickle', 'evil_zip')}
    paths.update(pth=random_model['pth'], onnx=random_model['onnx'])
    meta = published_meta(cfg, dataset_meta)
    legacy = dict(cfg=cfg.pretty_text, dataset_meta=dataset_meta)
    torch.save(dict(meta=legacy, state_dict=state), paths['legacy'])
    marker = folder / 'MARKER'
    payload = f"_x = __import__('os').system('touch {marker}')\n"
    torch.save(dict(meta=dict(legacy, cfg=payload + cfg.pretty_text), state_dict=state),
               paths['evil_cfg'])
    bad = json.loads(json.dumps(meta['config']))
    bad['model']['type'] = 'subprocess.run'
    torch.save(dict(meta=dict(meta, config=bad), state_dict=state), paths['evil_type'])
    bad = json.loads(json.dumps(meta['config']))
    bad['model']['backbone']['init_cfg'] = {'type': 'Pretrained', 'checkpoint': 'http://x/y.pth'}
    torch.save(dict(meta=dict(meta, config=bad), state_dict=state), paths['evil_init'])

    class Payload:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)
    with open(paths['evil_pickle'], 'wb') as stream:
        pickle.dump({'meta': {}, 'state_dict': Payload()}, stream)
    torch.save({'meta': {}, 'state_dict': Payload()}, paths['evil_zip'])
    paths['marker'] = str(marker)
    paths['folder'] = os.path.dirname(paths['pth'])  # the checkpoint's own folder
    return paths


def onnx_variant(models, tmp_path, name, change):
    import onnx
    proto = onnx.load(models['onnx'])
    metadata = {p.key: p.value for p in proto.metadata_props}
    change(metadata)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / f'{name}.onnx'
    onnx.save(proto, str(path))
    return str(path)


def write_image(path, width=96, height=112, seed=0):
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return str(path)


@pytest.fixture
def photo(tmp_path):
    return write_image(tmp_path / 'photo.png')


def run(main, argv, capsys):
    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(result, *fragments):
    code, _, err = result
    assert code == 2, err
    assert 'Traceback' not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert 'weights_only=False' not in lines[0]


def listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files)


def unwritable_folder(tmp_path):
    """A folder nobody can create files in: chmod 0555, or /proc when tests run as root."""
    if IS_ROOT:
        return '/proc/cephalometric-test'
    folder = tmp_path / 'readonly'
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


# -- inference.py: arguments ---------------------------------------------------------------------

@pytest.mark.parametrize('option, value, fragment', [
    ('--mm-per-pixel', '0', '--mm-per-pixel must be a positive number'),
    ('--mm-per-pixel', '-0.1', '--mm-per-pixel must be a positive number'),
    ('--mm-per-pixel', 'nan', '--mm-per-pixel must be a positive number'),
    ('--mm-per-pixel', 'inf', '--mm-per-pixel must be a positive number'),
    ('--score-threshold', '-0.1', '--score-threshold must be between 0 and 1'),
    ('--score-threshold', '1.5', '--score-threshold must be between 0 and 1'),
    ('--score-threshold', 'nan', '--score-threshold must be between 0 and 1'),
    ('--batch-size', '0', '--batch-size must be at least 1'),
    ('--batch-size', '-3', '--batch-size must be at least 1'),
    ('--device', 'tpu', '--device must be auto, cpu, cuda or cuda:N'),
    ('--device', 'cuda:x', '--device must be auto, cpu, cuda or cuda:N'),
    ('--bbox', 'nan,nan,nan,nan', '--bbox must be x,y,w,h'),
    ('--bbox', 'inf,0,10,10', '--bbox must be x,y,w,h'),
    ('--bbox', '1,2,3', '--bbox must be x,y,w,h'),
    ('--bbox', '0,0,0,10', '--bbox must be x,y,w,h'),
    ('--bbox', 'a,b,c,d', '--bbox must be x,y,w,h'),
    ('--bbox', '1000,1000,50,50', 'lies outside the 96x112 image'),
    ('--bbox', '-500,-500,100,100', 'lies outside the 96x112 image'),
])
def test_inference_bad_arguments(models, photo, tmp_path, capsys, option, value, fragment):
    out = tmp_path / 'out'
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                  '--out-dir', out, '--json', out / 'x.json', f'{option}={value}'],
                 capsys)
    assert_refused(result, fragment)
    assert not out.exists()


# -- inference.py: output locations --------------------------------------------------------------

@pytest.mark.parametrize('option', ['--json', '--csv'])
@pytest.mark.parametrize('where', ['folder', 'under_file', 'unwritable'])
def test_inference_output_that_cannot_be_written(models, photo, tmp_path, capsys, option, where):
    a_file = tmp_path / 'file.txt'
    a_file.write_text('mine')
    target = {'folder': tmp_path, 'under_file': a_file / 'x.out',
              'unwritable': os.path.join(unwritable_folder(tmp_path), 'x.out')}[where]
    before = listing(tmp_path)
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                  '--out-dir', tmp_path / 'pictures', option, target], capsys)
    fragment = {'folder': 'is a folder', 'under_file': 'which is a file',
                'unwritable': 'write'}[where]
    assert_refused(result, option if where != 'unwritable' else '', fragment)
    assert listing(tmp_path) == before and a_file.read_text() == 'mine'


def test_inference_refuses_to_overwrite_its_input_or_write_one_file_twice(models, photo,
                                                                         tmp_path, capsys):
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                  '--out-dir', photo], capsys)
    assert_refused(result, '--out-dir', 'is a file')
    original = open(photo, 'rb').read()
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                  '--out-file', photo], capsys)
    assert_refused(result, 'is one of the input images')
    assert open(photo, 'rb').read() == original
    same = tmp_path / 'same.txt'
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                  '--no-draw', '--json', same, '--csv', same], capsys)
    assert_refused(result, 'both write')
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                  '--out-file', tmp_path / 'picture.xyz'], capsys)
    assert_refused(result, 'unknown image extension')
    assert listing(tmp_path) == ['photo.png']


# -- inference.py: input images ------------------------------------------------------------------

def test_folder_with_a_bad_image_writes_nothing(models, tmp_path, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for i in range(3):
        write_image(photos / f'p{i}.png', seed=i)
    data = open(photos / 'p1.png', 'rb').read()
    (photos / 'p1.png').write_bytes(data[:len(data) // 3])     # truncated half-way
    (photos / 'p3.jpg').write_bytes(b'not an image at all')
    out = tmp_path / 'out'
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photos,
                                  '--out-dir', out, '--json', out / 'r.json',
                                  '--csv', tmp_path / 'r.csv'], capsys)
    assert_refused(result, 'cannot read image', 'p1.png')
    assert not out.exists() and not (tmp_path / 'r.csv').exists()


def test_truncated_image_is_one_line_in_a_real_process(models, tmp_path):
    """libpng prints its own "Read Error" to file descriptor 2: only a real process shows it."""
    data = open(write_image(tmp_path / 'whole.png'), 'rb').read()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 3])
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'inference.py'), '--checkpoint',
                             models['pth'], '--img-path', tmp_path / 'cut.png', '--out-dir',
                             tmp_path / 'out'], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert_refused((result.returncode, result.stdout, result.stderr), 'cannot read image')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('make, fragment', [
    (lambda d: d / 'missing.png', 'no image found'),
    (lambda d: (d / 'empty').mkdir() or d / 'empty', 'no images'),
    (lambda d: (d / 'zero.png').write_bytes(b'') or d / 'zero.png', 'cannot read image'),
])
def test_inference_missing_or_empty_input(models, tmp_path, capsys, make, fragment):
    result = run(inference.main, ['--checkpoint', models['pth'], '--img-path', make(tmp_path),
                                  '--out-dir', tmp_path / 'out'], capsys)
    assert_refused(result, fragment)
    assert not (tmp_path / 'out').exists()


def test_colliding_stems_get_unique_pictures_and_strict_json(models, tmp_path, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    write_image(photos / 'x.png', seed=1)
    write_image(photos / 'x.jpg', seed=2)
    out = tmp_path / 'out'
    code, stdout, err = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photos,
                                             '--out-dir', out, '--json', out / 'r.json',
                                             '--csv', out / 'r.csv', '--device', 'cpu'], capsys)
    assert code == 0, err
    assert listing(out) == ['r.csv', 'r.json', 'x_jpg_landmarks.jpg', 'x_png_landmarks.jpg']
    text = (out / 'r.json').read_text()
    records = json.loads(text, parse_constant=lambda c: pytest.fail(f'bare {c} in JSON'))
    assert sorted(r['picture'] for r in records) == sorted(
        str(out / n) for n in ('x_jpg_landmarks.jpg', 'x_png_landmarks.jpg'))


def test_tiny_image_and_unsure_landmarks_get_no_class(models, tmp_path, capsys):
    tiny = write_image(tmp_path / 'tiny.png', width=1, height=1)
    out = tmp_path / 'tiny.json'
    code, _, err = run(inference.main, ['--checkpoint', models['pth'], '--img-path', tiny,
                                        '--json', out, '--out-file', tmp_path / 'tiny_l.png',
                                        '--device', 'cpu'], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert 'skeletal_class' not in record['measurements']
    assert 'too small' in record['skeletal_class_note']
    assert (tmp_path / 'tiny_l.png').is_file()

    photo = write_image(tmp_path / 'face.png', width=200, height=240)
    code, _, err = run(inference.main, ['--checkpoint', models['pth'], '--img-path', photo,
                                        '--json', out, '--no-draw', '--score-threshold', '1',
                                        '--device', 'cpu'], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert 'skeletal_class' not in record['measurements']
    assert 'below score 1' in record['skeletal_class_note']
    assert all(landmark['review'] for landmark in record['landmarks'])


# -- checkpoints and ONNX files from someone else ------------------------------------------------

@pytest.mark.parametrize('name, fragment', [
    ('evil_cfg', 'not plain data'),
    ('evil_type', "'subprocess.run'"),
    ('evil_pickle', 'refused'),
    ('evil_zip', 'posix.system'),
])
def test_hostile_checkpoint_never_runs_code(models, photo, tmp_path, capsys, name, fragment):
    out = tmp_path / 'out.json'
    result = run(inference.main, ['--checkpoint', models[name], '--img-path', photo, '--no-draw',
                                  '--json', out, '--device', 'cpu'], capsys)
    assert_refused(result, fragment)
    assert not os.path.exists(models['marker']) and not out.exists()


def test_legacy_and_init_cfg_checkpoints_work_without_downloads(models, photo, tmp_path, capsys):
    for name in ('legacy', 'evil_init'):    # init_cfg (a download) is dropped, never followed
        out = tmp_path / f'{name}.json'
        code, _, err = run(inference.main, ['--checkpoint', models[name], '--img-path', photo,
                                            '--no-draw', '--json', out, '--device', 'cpu'], capsys)
        assert code == 0, err
        assert len(json.loads(out.read_text())['landmarks']) == 19 or json.loads(
            out.read_text())['landmarks']


@pytest.mark.parametrize('content, fragment', [
    (b'', 'cannot read checkpoint'),
    (b'hello, not a checkpoint', 'cannot read checkpoint'),
    (None, 'checkpoint not found'),
])
def test_bad_checkpoint_files(models, photo, tmp_path, capsys, content, fragment):
    path = tmp_path / 'model.pth'
    if content is not None:
        path.write_bytes(content)
    result = run(inference.main, ['--checkpoint', path, '--img-path', photo, '--no-draw'],
                 capsys)
    assert_refused(result, fragment)


def _truncated(models, tmp_path):
    data = open(models['onnx'], 'rb').read()
    path = tmp_path / 'truncated.onnx'
    path.write_bytes(data[:len(data) // 2])
    return str(path)


def _garbage(models, tmp_path):
    path = tmp_path / 'garbage.onnx'
    path.write_bytes(os.urandom(2048))
    return str(path)


def _metadata(key, value):
    def change(metadata):
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    return lambda models, tmp_path: onnx_variant(models, tmp_path, key, change)


@pytest.mark.parametrize('make, fragment', [
    (_truncated, 'cannot load ONNX model'),
    (_garbage, 'cannot load ONNX model'),
    (_metadata('landmark_names', None), 'lacks landmark_names'),
    (_metadata('landmark_names', '{not json'), 'is not JSON'),
    (_metadata('landmark_names', '[]'), 'landmark_names must be'),
    (_metadata('input_size', '[0, 0]'), 'input_size must be'),
    (_metadata('input_size', '[100000, 64]'), 'input_size must be'),
    (_metadata('input_size', '[128, 128]'), 'the network takes'),
    (_metadata('landmark_names', '["S", "N", "A"]'), 'names 3 landmarks'),
    (_metadata('std', '[0, 1, 1]'), 'std must be positive'),
    (_metadata('mean', '[1, 2]'), 'mean must be'),
    (_metadata('bbox_padding', '-1'), 'bbox_padding must be'),
    (_metadata('decoder', '{"heatmap_size": [999, 999], "unbiased": true}'), 'heatmap_size'),
    (_metadata('decoder', '{"heatmap_size": [16, 16], "blur_kernel_size": 4}'),
     'blur_kernel_size'),
])
def test_bad_onnx_files(models, photo, tmp_path, capsys, make, fragment):
    out = tmp_path / 'out.json'
    result = run(inference.main, ['--checkpoint', make(models, tmp_path), '--img-path', photo,
                                  '--no-draw', '--json', out], capsys)
    assert_refused(result, fragment)
    assert not out.exists()


def test_onnx_backend_needs_no_telemetry_files(models, photo, tmp_path):
    home, temporary = tmp_path / 'home', tmp_path / 'tmp'
    home.mkdir()
    temporary.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(temporary))
    env.pop('ORT_DISABLE_TELEMETRY', None)
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'inference.py'), '--checkpoint',
                             models['onnx'], '--img-path', photo, '--no-draw', '--json',
                             tmp_path / 'r.json'], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    assert os.listdir(home) == [] and os.listdir(temporary) == []


# -- export_onnx.py ------------------------------------------------------------------------------

@pytest.mark.parametrize('where, fragment', [
    ('unwritable', 'write'),
    ('folder', 'is a folder'),
    ('not_onnx', 'must end in .onnx'),
    ('under_file', 'which is a file'),
])
def test_export_refusals(models, tmp_path, capsys, where, fragment):
    a_file = tmp_path / 'file.txt'
    a_file.write_text('mine')
    (tmp_path / 'dir.onnx').mkdir()
    out = {'unwritable': os.path.join(unwritable_folder(tmp_path), 'model.onnx'),
           'folder': tmp_path / 'dir.onnx', 'not_onnx': tmp_path / 'model.pth',
           'under_file': a_file / 'model.onnx'}[where]
    before = listing(tmp_path)
    result = run(export_onnx.main, ['--checkpoint', models['pth'], '--out', out], capsys)
    assert_refused(result, fragment)
    assert listing(tmp_path) == before


def test_export_of_a_hostile_checkpoint_is_refused(models, tmp_path, capsys):
    result = run(export_onnx.main, ['--checkpoint', models['evil_cfg'], '--out',
                                    tmp_path / 'm.onnx'], capsys)
    assert_refused(result, 'not plain data')
    assert not os.path.exists(models['marker']) and os.listdir(tmp_path) == []


# -- evaluate.py ---------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data_root(demo_dataset):
    return demo_dataset[1]


def evaluate_args(models, data_root, out, *extra):
    return ['--checkpoint', models['pth'], '--data-root', data_root, '--out-dir', out,
            '--device', 'cpu', '--worst', '1', *extra]


@pytest.mark.parametrize('target', ['data_root', 'checkpoint_folder', 'parent_of_data'])
def test_evaluate_overwrite_never_replaces_what_it_reads(models, data_root, capsys, target):
    out = {'data_root': data_root, 'checkpoint_folder': models['folder'],
           'parent_of_data': data_root.parent}[target]
    before = listing(data_root)
    result = run(evaluate.main, evaluate_args(models, data_root, out, '--overwrite'), capsys)
    assert_refused(result, 'which this run reads')
    assert listing(data_root) == before and os.path.isfile(models['pth'])


def test_evaluate_overwrite_keeps_a_folder_it_did_not_write(models, data_root, tmp_path, capsys):
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'patient_notes.txt').write_text('keep')
    result = run(evaluate.main, evaluate_args(models, data_root, notes, '--overwrite'), capsys)
    assert_refused(result, 'not written by this project')
    assert listing(notes) == ['patient_notes.txt']


@pytest.mark.parametrize('name, fragment', [('evil_cfg', 'not plain data'),
                                            ('evil_pickle', 'refused')])
def test_evaluate_hostile_checkpoint(models, data_root, tmp_path, capsys, name, fragment):
    out = tmp_path / 'eval'
    args = evaluate_args(models, data_root, out)
    args[1] = models[name]
    assert_refused(run(evaluate.main, args, capsys), fragment)
    assert not os.path.exists(models['marker']) and not out.exists()


@pytest.mark.parametrize('damage', ['truncated', 'no_images_key', 'not_a_dict'])
def test_evaluate_damaged_annotations(models, data_root, tmp_path, capsys, damage):
    import shutil
    copy = tmp_path / 'data'
    shutil.copytree(data_root / 'annotations', copy / 'annotations')
    path = copy / 'annotations' / 'test.json'
    text = path.read_text()
    path.write_text({'truncated': text[:len(text) // 2],
                     'no_images_key': json.dumps({k: v for k, v in json.loads(text).items()
                                                  if k != 'images'}),
                     'not_a_dict': '[1, 2, 3]'}[damage])
    out = tmp_path / 'eval'
    assert_refused(run(evaluate.main, evaluate_args(models, copy, out), capsys), 'test.json')
    assert not out.exists()


def test_evaluate_bad_device_and_then_a_good_run(models, data_root, tmp_path, capsys):
    out = tmp_path / 'eval'
    args = evaluate_args(models, data_root, out)
    assert_refused(run(evaluate.main, args[:-4] + ['--device', 'tpu'], capsys), '--device')
    assert not out.exists()
    code, _, err = run(evaluate.main, args, capsys)
    assert code == 0, err
    assert (out / '.cephalometric-output').is_file()
    json.loads((out / 'metrics.json').read_text(),
               parse_constant=lambda c: pytest.fail(f'bare {c} in metrics.json'))
    code, _, err = run(evaluate.main, args + ['--overwrite'], capsys)   # ours: replaced
    assert code == 0, err
