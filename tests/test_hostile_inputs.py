"""Hostile and careless data files: every reader bounds what it accepts before it allocates or
recurses (sizes, nesting depth, digits), and every case ends in one line `error: what; how to fix`
with exit status 2 (issue 22, deliverable 6).

The classes: depth maps whose header claims absurd sizes (.npy, 16-bit PNG/TIFF); JSON with
integers of hundreds of digits, nesting 20,000-100,000 deep, NaN/Infinity or 1e400 (prepared
annotations, metainfo.json, the ruler file, inference JSON read back, ONNX metadata); annotation
records with a missing bbox, sizes as text, negative or infinite, keypoint lists of the wrong
length; a training photograph that cannot be decoded when it is loaded (also in a data-loading
worker); ONNX models with impossible heatmap shapes; models that predict NaN or infinite
heatmaps (flagged landmarks, strict JSON, no class); impossible numbers among the options of
prepare_cephalometric_data.py. Tools run in-process through `run_cli`, as the scripts run them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import prepare_cephalometric_data as prepare_cli
from cephalometric.data import reader as dataset_reader
from cephalometric.data.demo import make_demo_dataframe
from cephalometric.data.depth import read_depth_file
from cephalometric.data.writer import prepare_dataset
from cephalometric.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Helpers


def one_line(code: int, err: str, *fragments: str) -> str:
    err = err.strip()
    assert code == 2, (code, err[-2000:])
    assert 'Traceback' not in err, err[-2000:]
    assert err.startswith('error: ') and '\n' not in err, err[-2000:]
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def refused(capsys, read, *fragments: str) -> str:
    """Run `read` as a script's main runs it: one line, exit status 2."""
    capsys.readouterr()

    def main(argv=None):
        read()
        return 0

    code = run_cli(main, [])
    return one_line(code, capsys.readouterr().err, *fragments)


def nested(depth: int) -> str:
    return '[' * depth + ']' * depth


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> tuple[Path, Path]:
    """(a small pickled demo table without a set column, the dataset prepared from it)."""
    folder = tmp_path_factory.mktemp('source')
    table = folder / 'table.pkl'
    make_demo_dataframe(num_patients=10, seed=0, image_size=64).drop(columns=['set']).to_pickle(
        table)
    prepare_dataset(table, folder / 'prepared', progress=False)
    return table, folder / 'prepared'


@pytest.fixture
def data_root(source, tmp_path) -> Path:
    return Path(shutil.copytree(source[1], tmp_path / 'data_root'))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def replace_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def build_dataset(root: Path, pipeline=(), test_mode=True, ann_file='annotations/train.json'):
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

    from mmpose.utils import register_all_modules

    from cephalometric.mmpose_plugins.dataset import CephalometricDataset
    register_all_modules(init_default_scope=True)
    return CephalometricDataset(data_root=str(root), ann_file=ann_file, data_mode='topdown',
                                data_prefix=dict(img='images/'), pipeline=list(pipeline),
                                test_mode=test_mode)


# --------------------------------------------------------------------------------------------------
# Depth maps whose header claims absurd sizes


def _npy_header(path: Path, shape, descr='<f8', data=b'\0' * 64):
    with open(path, 'wb') as stream:
        np.lib.format.write_array_header_1_0(
            stream, {'descr': descr, 'fortran_order': False, 'shape': shape})
        stream.write(data)


def _png_claiming(path: Path, width: int, height: int) -> None:
    ok, buffer = cv2.imencode('.png', np.zeros((4, 4), np.uint16))
    data = bytearray(buffer.tobytes())
    data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('make, fragment', [
    (lambda p: _npy_header(p, (1 << 20, 1 << 20)), 'claims 1048576x1048576 pixels'),   # 8 TiB
    (lambda p: _npy_header(p, (10 ** 400, 10 ** 400)), 'impossible size'),
    (lambda p: _npy_header(p, (3000, 4000)), 'truncated'),
    (lambda p: _npy_header(p, (4, 4, 4)), 'not one (H, W) map'),
    (lambda p: _npy_header(p, (4, 4), descr='|O'), 'not plain numbers'),
    (lambda p: np.save(p, np.zeros((4, 4), dtype=[('a', '<f4')])), 'not plain numbers'),
    (lambda p: np.save(p, np.zeros((4, 4), complex)), 'not plain numbers'),
    (lambda p: p.write_bytes(b'\x93NUMPY'), 'cannot read depth file'),
], ids=['8 TiB', '400 digits', 'truncated', '3-D', 'object', 'structured', 'complex', 'cut'])
def test_npy_depth_header_is_bounded_before_anything_is_allocated(tmp_path, capsys, monkeypatch,
                                                                  make, fragment):
    path = tmp_path / 'depth.npy'
    make(path)
    real_empty = np.empty

    def bounded_empty(shape, *args, **kwargs):   # any large allocation is a failure of the check
        assert np.prod(np.asarray(shape, dtype=object)) < 1 << 28, shape
        return real_empty(shape, *args, **kwargs)
    monkeypatch.setattr(np, 'empty', bounded_empty)
    refused(capsys, lambda: read_depth_file(str(path)), str(path), fragment,
            'give a 2-D .npy array')


@pytest.mark.parametrize('name, make', [
    ('depth.png', lambda p: _png_claiming(p, 30000, 30000)),
    ('depth.png', lambda p: _png_claiming(p, 100000, 100000)),
    ('depth.tif', lambda p: __import__('PIL.Image').Image.new('I;16', (9000, 9000)).save(p)),
], ids=['png 30000x30000', 'png 100000x100000', 'tiff 9000x9000'])
def test_png_and_tiff_depth_header_is_bounded(tmp_path, capsys, name, make):
    path = tmp_path / name
    make(path)
    refused(capsys, lambda: read_depth_file(str(path)), str(path), 'pixels', 'give a 2-D')


def test_ordinary_depth_files_still_read(tmp_path):
    depth = np.random.default_rng(0).random((30, 40)).astype(np.float32) + 0.5
    np.save(tmp_path / 'c.npy', depth)
    np.save(tmp_path / 'f.npy', np.asfortranarray(depth))
    np.save(tmp_path / 'one.npy', depth[..., None].astype(np.float64))
    cv2.imwrite(str(tmp_path / 'd.png'), (depth * 1000).astype(np.uint16))
    for name in ('c.npy', 'f.npy', 'one.npy'):
        np.testing.assert_allclose(read_depth_file(str(tmp_path / name)), depth, rtol=1e-6)
    assert read_depth_file(str(tmp_path / 'd.png')).shape == (30, 40)


# --------------------------------------------------------------------------------------------------
# Prepared datasets: annotations and metainfo.json


def _set_first(key, value, where='images'):
    def change(data):
        data[where][0][key] = value
    return change


def _drop_first(key, where='annotations'):
    def change(data):
        del data[where][0][key]
    return change


def _raw(old, new):
    """Edit the JSON text itself (for what json.dumps cannot write)."""
    def change(path: Path):
        replace_text(path, old, new)
    return change


def _json(change):
    def damage(path: Path):
        edit_json(path, change)
    return damage


def _long_keypoints(data):
    data['annotations'][0]['keypoints'] += [1.0, 2.0, 2]


def _second_annotation(data):
    data['annotations'].append(dict(data['annotations'][0], id=10 ** 6))


ANNOTATION_DAMAGE = [
    (_raw('"width":64', '"width":' + '9' * 400), 'digits', 'integer'),
    (_raw('"info":{', '"deep":' + nested(20000) + ',"info":{'), 'nested deeper'),
    (_raw('"info":{', '"deep":' + nested(100000) + ',"info":{'), 'nested deeper'),
    (_raw('"width":64', '"width":Infinity'), 'Infinity is not a number'),
    (_raw('"width":64', '"width":NaN'), 'NaN is not a number'),
    (_raw('"width":64', '"width":1e400'), 'image id', 'has width inf'),
    (_json(_drop_first('bbox')), 'annotation 1 (for image id', 'has no bbox'),
    (_json(_set_first('bbox', [0, 0, 0, 64], 'annotations')), 'annotation 1', 'bbox'),
    (_json(_set_first('bbox', 'all', 'annotations')), 'annotation 1', 'bbox'),
    (_json(_set_first('width', '64')), 'image id', "has width '64'"),
    (_json(_set_first('height', -64)), 'image id', 'has height -64'),
    (_json(_set_first('height', 0)), 'image id', 'has height 0'),
    (_json(_set_first('width', 64.5)), 'image id', 'has width 64.5'),
    (_json(_long_keypoints), 'annotation 1', 'keypoint numbers, not 57'),
    (_json(_set_first('keypoints', [0] * 57 + [1], 'annotations')), 'annotation 1', 'keypoint'),
    (_json(_set_first('keypoints', 'x', 'annotations')), 'annotation 1', 'keypoint numbers'),
    (_json(_set_first('keypoints', [1.0, 1.0, 7] * 19, 'annotations')), 'visibility'),
    (_json(_set_first('file_name', '../../../etc/passwd')), 'image id', 'file_name'),
    (_json(_set_first('id', True)), 'image entry 1'),
    (_json(_drop_first('id')), 'annotation 1', 'has id None'),
    (_json(_drop_first('category_id')), 'annotation 1', 'category_id'),
    (_json(_set_first('mm_per_pixel', -1, 'annotations')), 'annotation 1', 'mm_per_pixel'),
    (_json(_set_first('skeletal_class', 'II', 'annotations')), 'annotation 1', 'skeletal_class'),
    (_json(_second_annotation), 'second annotation of that image'),
]
ANNOTATION_DAMAGE = [(entry[0], entry[1:]) for entry in ANNOTATION_DAMAGE]
ANNOTATION_IDS = ['400 digits', 'nested 20000', 'nested 100000', 'Infinity', 'NaN', '1e400',
                  'no bbox', 'zero-width bbox', 'bbox text', 'width text', 'height negative',
                  'height zero', 'width fraction', 'long keypoints', 'short keypoints',
                  'keypoints text', 'visibility 7', 'file_name escapes', 'image id bool',
                  'no annotation id', 'no category_id', 'negative spacing', 'class text',
                  'two annotations']


@pytest.mark.parametrize('damage, fragments', ANNOTATION_DAMAGE, ids=ANNOTATION_IDS)
def test_damaged_annotation_records_are_one_line_naming_file_and_record(data_root, capsys, damage,
                                                                        fragments):
    path = data_root / 'annotations' / 'val.json'
    damage(path)
    refused(capsys, lambda: dataset_reader.load_split(str(data_root), 'val'), str(path),
            *fragments, '--overwrite')


@pytest.mark.parametrize('damage, fragments', ANNOTATION_DAMAGE[:8] + ANNOTATION_DAMAGE[9:14],
                         ids=ANNOTATION_IDS[:8] + ANNOTATION_IDS[9:14])
def test_damaged_annotation_records_are_one_line_for_the_mmpose_dataset(data_root, capsys, damage,
                                                                        fragments):
    path = data_root / 'annotations' / 'train.json'
    damage(path)
    refused(capsys, lambda: build_dataset(data_root), str(path), *fragments)


def test_annotations_naming_more_landmarks_than_the_metainfo(data_root, capsys):
    def change(data):
        data['categories'][0]['keypoints'] = data['categories'][0]['keypoints'][:-1]
        for ann in data['annotations']:
            ann['keypoints'] = ann['keypoints'][:-3]
            ann['num_keypoints'] = sum(v > 0 for v in ann['keypoints'][2::3])
    edit_json(data_root / 'annotations' / 'train.json', change)
    refused(capsys, lambda: build_dataset(data_root), 'names 18 landmarks', 'has 19')


@pytest.mark.parametrize('old, new, fragment', [
    ('"sigmas": [\n    0.025', '"sigmas": [\n    ' + '1' * 400, 'digits'),
    ('"sigmas": [\n    0.025', '"sigmas": [\n    NaN', 'NaN is not a number'),
    ('"sigmas": [\n    0.025', '"sigmas": [\n    Infinity', 'Infinity is not a number'),
    ('"sigmas": [\n    0.025', '"sigmas": [\n    1e400', 'sigmas'),
    ('"sigmas": [\n    0.025', '"sigmas": [\n    -0.025', 'sigmas'),
    ('"skeleton_info": {}', '"skeleton_info": ' + nested(50000), 'nested deeper'),
    ('"0": {', '"' + '0' * 400 + '": {', 'keypoint id'),
], ids=['400 digits', 'NaN', 'Infinity', '1e400', 'negative sigma', 'nested 50000', 'id digits'])
def test_damaged_metainfo_json_is_one_line(data_root, capsys, old, new, fragment):
    path = data_root / 'metainfo.json'
    replace_text(path, old, new)
    refused(capsys, lambda: dataset_reader.read_metainfo(str(data_root)), 'metainfo.json',
            fragment, '--overwrite')


# --------------------------------------------------------------------------------------------------
# A training photograph that cannot be decoded when it is loaded


def _truncate_first_image(root: Path) -> Path:
    images = json.loads((root / 'annotations' / 'train.json').read_text())['images']
    path = root / 'images' / images[0]['file_name']
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


LOAD = [dict(type='LoadImage')]


def test_truncated_training_png_is_one_line_when_loaded(data_root, capsys):
    dataset = build_dataset(data_root, LOAD, test_mode=False)   # annotations are fine
    path = _truncate_first_image(data_root)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['img_path'].endswith(path.name))
    refused(capsys, lambda: dataset[index], path.name, 'cannot be decoded',
            'prepare_cephalometric_data.py', '--overwrite')


def test_training_png_of_another_size_is_named_when_loading_fails(data_root, capsys):
    from cephalometric.mmpose_plugins.dataset import undecodable_reason
    path = data_root / 'images' / sorted(os.listdir(data_root / 'images'))[0]
    cv2.imwrite(str(path), np.zeros((10, 12, 3), np.uint8))
    assert 'is 12x10 pixels but its annotation says 64x64' in undecodable_reason(str(path), 64, 64)
    assert undecodable_reason(str(path), 12, 10) is None


def test_truncated_training_png_is_one_line_from_a_loader_worker(data_root):
    from torch.utils.data import DataLoader

    from cephalometric.errors import UserError, first_line
    dataset = build_dataset(data_root, LOAD, test_mode=False)
    path = _truncate_first_image(data_root)
    loader = DataLoader(dataset, batch_size=len(dataset), num_workers=1,
                        collate_fn=lambda batch: batch)
    with pytest.raises(UserError) as caught:
        next(iter(loader))
    message = str(caught.value)
    assert '\n' not in message and 'Traceback' not in message, message
    assert path.name in message and 'cannot be decoded' in message, message
    assert first_line(caught.value) == message


# --------------------------------------------------------------------------------------------------
# prepare_cephalometric_data.py: impossible numbers and the ruler file


@pytest.fixture
def table(source, tmp_path) -> Path:
    return Path(shutil.copy(source[0], tmp_path / 'table.pkl'))


def prepare(capsys, *argv):
    capsys.readouterr()
    code = run_cli(prepare_cli.main, [str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize('option, value, fragment', [
    ('--seed', '-1', '--seed -1 must be a whole number from 0 to 4294967295'),
    ('--seed', str(2 ** 64), 'must be a whole number from 0'),
    ('--val-fraction', 'nan', '--val-fraction nan must be at least 0 and below 1'),
    ('--val-fraction', 'inf', '--val-fraction inf must be at least 0 and below 1'),
    ('--val-fraction=-0.1', None, 'must be at least 0 and below 1'),
    ('--test-fraction', '1', '--test-fraction 1.0 must be at least 0 and below 1'),
    ('--test-fraction=-inf', None, 'must be at least 0 and below 1'),
    ('--ruler-image-size', '0', '--ruler-image-size 0 must be a positive number of pixels'),
    ('--ruler-image-size=-600', None, 'must be a positive number of pixels'),
    ('--ruler-image-size', '9' * 400, 'must be a positive number of pixels'),
    ('--mm-per-pixel', 'nan', '--mm-per-pixel nan must be a positive number'),
    ('--mm-per-pixel', 'inf', 'must be a positive number'),
    ('--mm-per-pixel=-0.1', None, 'must be a positive number'),
    ('--mm-per-pixel', '0', 'must be a positive number'),
    ('--image-size', '0', 'must be whole numbers of pixels'),
    ('--image-size', '9' * 400, 'is not a size'),
    ('--image-size', '100000x100000', 'must be whole numbers of pixels'),
])
def test_prepare_refuses_impossible_numbers(table, tmp_path, capsys, option, value, fragment):
    out = tmp_path / 'out'
    code, err = prepare(capsys, '--input', table, '--out-dir', out, option,
                        *([] if value is None else [value]))
    one_line(code, err, fragment)
    assert not out.exists()


def test_prepare_refuses_an_impossible_seed_with_a_set_column_too(source, tmp_path, capsys):
    table = tmp_path / 'with_set.pkl'
    make_demo_dataframe(num_patients=10, seed=0, image_size=64).to_pickle(table)
    code, err = prepare(capsys, '--input', table, '--out-dir', tmp_path / 'out', '--seed', '-1')
    one_line(code, err, '--seed -1')


def _ruler_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / 'ruler.json'
    path.write_text(text)
    return path


def _ruler_entry(value: str) -> str:
    return ('{"0": {"ruler_point_up_x": ' + value + ', "ruler_point_up_y": 1, '
            '"ruler_point_down_x": 1, "ruler_point_down_y": 30}}')


@pytest.mark.parametrize('text, fragment', [
    (_ruler_entry('1' * 400), 'digits'),
    (_ruler_entry('NaN'), 'NaN is not a number'),
    (_ruler_entry('Infinity'), 'Infinity is not a number'),
    (_ruler_entry('1e400'), 'unreadable entries for patients 0'),
    (_ruler_entry('"12"'), 'unreadable entries for patients 0'),
    (_ruler_entry('true'), 'unreadable entries for patients 0'),
    ('{"0": ' + nested(30000) + '}', 'nested deeper'),
    (nested(100000), 'nested deeper'),
    ('{"0": {', 'cannot read ruler file'),
], ids=['400 digits', 'NaN', 'Infinity', '1e400', 'text', 'true', 'nested 30000',
        'nested 100000', 'truncated'])
def test_prepare_refuses_a_hostile_ruler_file(table, tmp_path, capsys, text, fragment):
    ruler = _ruler_file(tmp_path, text)
    out = tmp_path / 'out'
    code, err = prepare(capsys, '--input', table, '--out-dir', out, '--ruler-json', ruler)
    one_line(code, err, 'ruler file', fragment)
    assert not out.exists()


def test_prepare_with_a_good_ruler_file_still_works(table, tmp_path, capsys):
    ruler = _ruler_file(tmp_path, _ruler_entry('1'))
    out = tmp_path / 'out'
    code, err = prepare(capsys, '--input', table, '--out-dir', out, '--ruler-json', ruler,
                        '--seed', '4294967295')
    assert code == 0, err
    assert 'pixel spacing' in capsys.readouterr().out or out.exists()
    frame = pd.read_pickle(table)
    assert len(frame) == 10


# --------------------------------------------------------------------------------------------------
# Models: impossible heatmap shapes, NaN and infinite heatmaps, hostile ONNX metadata


def _photo(path: Path, width=96, height=112) -> str:
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return str(path)


@pytest.fixture(scope='module')
def models(random_model, tmp_path_factory):
    """A published random-weight checkpoint ('pth'), variants whose last layer makes every
    heatmap NaN, +inf or -inf, and ONNX exports of 'pth' and 'nan' (paths as str)."""
    from cephalometric.model.checkpoint import published_meta, write_published_checkpoint
    from cephalometric.prediction.onnx import export_onnx
    from cephalometric.prediction.predictor import LandmarkPredictor

    folder = tmp_path_factory.mktemp('models')
    state = random_model['state']
    meta = published_meta(random_model['cfg'], random_model['dataset_meta'])
    paths = {'pth': random_model['pth'], 'pth.onnx': random_model['onnx']}
    for name, key, value in (('nan', 'weight', float('nan')), ('inf', 'bias', float('inf')),
                             ('-inf', 'bias', float('-inf'))):
        broken = {k: v.clone() for k, v in state.items()}
        broken[f'head.final_layer.{key}'].fill_(value)
        paths[name] = str(folder / f'{name}.pth')
        write_published_checkpoint(paths[name], meta, broken)
    predictor = LandmarkPredictor(paths['nan'], device='cpu')
    paths['nan.onnx'] = str(folder / 'nan.onnx')
    export_onnx(predictor.network.net, predictor.settings, paths['nan.onnx'])
    return paths


def run_tool(main, argv, capsys):
    capsys.readouterr()
    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize('model', ['nan', 'inf', '-inf', 'nan.onnx'])
@pytest.mark.parametrize('bbox', ['auto', 'full', '0,0,96,112'])
def test_model_predicting_nan_or_inf_gives_flagged_landmarks_and_no_class(models, tmp_path,
                                                                        capsys, model, bbox):
    import inference
    photo = _photo(tmp_path / 'photo.png')
    out_json, out_csv = tmp_path / 'out.json', tmp_path / 'out.csv'
    code, out, err = run_tool(inference.main, [
        '--checkpoint', models[model], '--img-path', photo, '--out-file', tmp_path / 'p.jpg',
        '--json', out_json, '--csv', out_csv, '--bbox', bbox, '--device', 'cpu',
        '--score-threshold', '0'], capsys)
    assert code == 0, err
    assert 'Traceback' not in err
    text = out_json.read_text()
    assert 'NaN' not in text.replace('hold NaN or infinity', '') and 'Infinity' not in text
    record = json.loads(text)          # strict JSON
    for landmark in record['landmarks']:
        assert landmark['x'] is None and landmark['y'] is None, landmark
        assert landmark['score'] == 0.0 and landmark['review'] is True, landmark
    assert 'skeletal_class' not in record['measurements']
    assert record['skeletal_class_note'].startswith('no skeletal class')
    assert record['framing']['review_reason']
    assert (tmp_path / 'p.jpg').stat().st_size > 0 and out_csv.read_text().count('\n') == 2


def test_evaluate_with_a_model_predicting_nan_is_not_a_traceback(models, source, tmp_path,
                                                                 capsys):
    import evaluate
    code, out, err = run_tool(evaluate.main, [
        '--checkpoint', models['nan'], '--data-root', source[1], '--split', 'val',
        '--out-dir', tmp_path / 'eval', '--device', 'cpu'], capsys)
    assert 'Traceback' not in err, err[-3000:]
    assert code in (0, 2), err[-3000:]
    if code == 2:
        one_line(code, err)


def test_decode_heatmaps_gives_no_position_and_score_0_for_broken_maps():
    from cephalometric.prediction.heatmaps import decode_heatmaps
    maps = np.zeros((2, 3, 16, 16), np.float32)
    maps[:, :, 8, 8] = 1.0
    maps[0, 0, 3, 3] = np.nan          # one NaN pixel spoils that map only
    maps[0, 1] = np.inf
    maps[1, 2, 0, 0] = -np.inf
    for unbiased in (True, False):
        keypoints, scores = decode_heatmaps(maps, (64, 64), unbiased, 3)
        broken = np.array([[True, True, False], [False, False, True]])
        assert np.isnan(keypoints[broken]).all() and (scores[broken] == 0).all()
        assert np.isfinite(keypoints[~broken]).all() and (scores[~broken] == 1).all()
    huge = np.full((1, 1, 16, 16), 3e38, np.float32)
    huge[0, 0, 8, 8] = 3.4e38
    keypoints, scores = decode_heatmaps(huge, (64, 64), True, 11)
    assert np.isfinite(keypoints).all()


class _FakeNetwork:
    """A backend returning heatmaps of a given shape (an ONNX graph with symbolic dimensions can
    give any at run time)."""
    name, device = 'onnxruntime', 'cpu'

    def __init__(self, shape, dtype=np.float32):
        self.shape, self.dtype = shape, dtype

    def __call__(self, batch):
        shape = tuple(len(batch) if v == 'N' else v for v in self.shape)
        return np.ones(shape, self.dtype)


@pytest.mark.parametrize('shape, dtype', [
    (('N', 19, 16, 0), np.float32), (('N', 19, 0, 16), np.float32), (('N', 19, 16), np.float32),
    (('N', 18, 16, 16), np.float32), ((1, 19, 16, 16), np.float32),
    (('N', 19, 512, 512), np.float32), (('N', 19, 16, 16), np.bool_),
], ids=['zero width', 'zero height', '3-D', '18 landmarks', 'batch of 1', 'larger than input',
        'bool'])
def test_network_giving_impossible_heatmaps_at_run_time_is_one_line(models, capsys, shape, dtype):
    from cephalometric.model.checkpoint import load_published
    from cephalometric.prediction.predictor import LandmarkPredictor
    settings = load_published(models['pth']).settings
    predictor = LandmarkPredictor.from_backend(settings, _FakeNetwork(shape, dtype))
    images = [np.zeros((112, 96, 3), np.uint8)] * 2
    refused(capsys, lambda: predictor.predict(images, 'full'), 'heatmaps',
            'export it again with export_onnx.py')
    refused(capsys, lambda: predictor.predict(images, 'auto'), 'heatmaps')


def _onnx_graph(models, tmp_path, name, tail, out_channels=19, out_shape=('N', 19, 'h', 'w'),
                out_type=None):
    """A hand-built ONNX model with the real model's metadata: a 1x1 convolution to
    `out_channels` maps of the input's size, then the nodes `tail(helper, 'maps')` make."""
    import onnx
    from onnx import TensorProto, helper
    real = onnx.load(models['pth.onnx'])
    weight = helper.make_tensor('weight', TensorProto.FLOAT, [out_channels, 3, 1, 1],
                                [0.0] * out_channels * 3)
    nodes = [helper.make_node('Conv', ['input', 'weight'], ['maps'])]
    extra, last = tail(helper, 'maps')
    nodes += extra
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info('input', TensorProto.FLOAT,
                                                    ['N', 3, 64, 64])],
        [helper.make_tensor_value_info(last, out_type or TensorProto.FLOAT, list(out_shape))],
        initializer=[weight] + [init for node in extra for init in getattr(node, 'inits', [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = real.ir_version
    for prop in real.metadata_props:
        entry = model.metadata_props.add()
        entry.key, entry.value = prop.key, prop.value
    path = tmp_path / f'{name}.onnx'
    onnx.save(model, str(path))
    return str(path)


def _const(helper, name, values):
    from onnx import TensorProto
    return helper.make_node('Constant', [], [name], value=helper.make_tensor(
        name, TensorProto.INT64, [len(values)], values))


def _zero_width(helper, x):
    return [_const(helper, 'starts', [0]), _const(helper, 'ends', [0]),
            _const(helper, 'axes', [3]),
            helper.make_node('Slice', [x, 'starts', 'ends', 'axes'], ['out'])], 'out'


def _zero_height(helper, x):
    return [_const(helper, 'starts', [0]), _const(helper, 'ends', [0]),
            _const(helper, 'axes', [2]),
            helper.make_node('Slice', [x, 'starts', 'ends', 'axes'], ['out'])], 'out'


def _larger(helper, x):
    return [_const(helper, 'repeats', [1, 1, 4, 4]),
            helper.make_node('Tile', [x, 'repeats'], ['out'])], 'out'


def _integers(helper, x):
    from onnx import TensorProto
    return [helper.make_node('Cast', [x], ['out'], to=TensorProto.INT64)], 'out'


def _identity(helper, x):
    return [helper.make_node('Identity', [x], ['out'])], 'out'


@pytest.mark.parametrize('tail, kwargs, fragment', [
    (_zero_width, {}, 'impossible for a 64x64 input'),
    (_zero_height, {}, 'impossible for a 64x64 input'),
    (_zero_width, {'out_shape': ('N', 19, 64, 0)}, 'impossible for a 64x64 input'),
    (_larger, {}, 'impossible for a 64x64 input'),
    (_integers, {'out_type': 7}, 'not floating point'),
    (_identity, {'out_channels': 5}, 'names 19 landmarks'),
], ids=['zero width', 'zero height', 'declared zero width', 'larger than input', 'int64',
        '5 maps'])
def test_onnx_model_with_impossible_heatmaps_is_one_line(models, tmp_path, capsys, tail, kwargs,
                                                         fragment):
    import inference
    model = _onnx_graph(models, tmp_path, 'hostile', tail, **kwargs)
    out = tmp_path / 'out.json'
    code, _, err = run_tool(inference.main, [
        '--checkpoint', model, '--img-path', _photo(tmp_path / 'photo.png'), '--no-draw',
        '--json', out, '--device', 'cpu'], capsys)
    one_line(code, err, 'hostile.onnx', fragment)
    assert not out.exists()


def _metadata_variant(models, tmp_path, key, value):
    import onnx
    proto = onnx.load(models['pth.onnx'])
    props = {prop.key: prop for prop in proto.metadata_props}
    if key not in props:
        props[key] = proto.metadata_props.add()
        props[key].key = key
    props[key].value = value
    path = tmp_path / 'metadata.onnx'
    onnx.save(proto, str(path))
    return str(path)


@pytest.mark.parametrize('key, value, fragment', [
    ('input_size', '[' + '6' * 400 + ', 64]', 'digits'),
    ('input_size', nested(20000), 'nested deeper'),
    ('input_size', nested(100000), 'nested deeper'),
    ('bbox_padding', 'NaN', 'NaN is not a number'),
    ('bbox_padding', 'Infinity', 'Infinity is not a number'),
    ('bbox_padding', '1e400', 'bbox_padding must be'),
    ('mean', '[1e300, 0, 0]', 'mean must be'),
    ('std', '[1e-300, 1, 1]', 'std must be positive'),
    ('framing_prior', '{"offset": [1e300, 0], "ratio": [1, 1]}', 'framing_prior'),
    ('framing_prior', '{"offset": [0, 0], "ratio": [1, 1], "facing": [0.2]}', 'facing must be'),
    ('landmark_names', json.dumps([f'L{i}' for i in range(5000)]), 'landmark_names must be'),
    ('decoder', '{"heatmap_size": [16, 16], "blur_kernel_size": ' + '1' * 400 + '}', 'digits'),
    ('decoder', 'x' * (2 << 20), 'longer than'),
], ids=['400 digits', 'nested 20000', 'nested 100000', 'NaN', 'Infinity', '1e400', 'huge mean',
        'tiny std', 'huge prior', 'short facing', '5000 names', 'kernel digits', '2 MB'])
def test_hostile_onnx_metadata_is_one_line(models, tmp_path, capsys, key, value, fragment):
    import inference
    model = _metadata_variant(models, tmp_path, key, value)
    code, _, err = run_tool(inference.main, [
        '--checkpoint', model, '--img-path', _photo(tmp_path / 'photo.png'), '--no-draw',
        '--device', 'cpu'], capsys)
    one_line(code, err, 'metadata.onnx', fragment, 'export')


# --------------------------------------------------------------------------------------------------
# Inference JSON read back


def _inference_json(models, tmp_path, capsys) -> Path:
    import inference
    out = tmp_path / 'landmarks.json'
    code, _, err = run_tool(inference.main, [
        '--checkpoint', models['pth'], '--img-path', _photo(tmp_path / 'photo.png'), '--no-draw',
        '--json', out, '--bbox', 'full', '--device', 'cpu'], capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize('old, new, fragment', [
    ('"size": [\n    96', '"size": [\n    ' + '9' * 400, 'digits'),
    ('"size": [\n    96', '"size": [\n    Infinity', 'Infinity is not a number'),
    ('"size": [\n    96', '"size": [\n    1e400', 'size'),
    ('"size": [\n    96', '"size": [\n    "96"', 'size'),
    ('"size": [\n    96', '"size": [\n    -96', 'size'),
    ('"x": ', '"x": NaN, "was": ', 'NaN is not a number'),
    ('"x": ', '"x": "12", "was": ', 'numeric x, y, score'),
    ('"image": ', '"deep": ' + nested(50000) + ', "image": ', 'nested deeper'),
    ('"landmarks": [', '"landmarks": "all", "was": [', 'no landmarks list'),
], ids=['400 digits', 'Infinity', '1e400', 'size text', 'size negative', 'x NaN', 'x text',
        'nested 50000', 'landmarks text'])
def test_inference_json_read_back_is_bounded(models, tmp_path, capsys, old, new, fragment):
    from cephalometric.prediction.results import load_records
    path = _inference_json(models, tmp_path, capsys)
    assert len(load_records(str(path))) == 1
    replace_text(path, old, new)
    refused(capsys, lambda: load_records(str(path)), str(path), fragment, 'inference.py --json')


def test_decode_heatmaps_with_a_single_refined_map():
    """One map inside the border (the others broken, or a one-landmark model): OpenCV's blur of
    one channel drops the channel axis, which the DARK step used to trip over."""
    from cephalometric.prediction.heatmaps import decode_heatmaps
    maps = np.zeros((1, 2, 16, 16), np.float32)
    maps[0, 0, 8, 8] = 1.0
    maps[0, 1] = np.nan
    keypoints, scores = decode_heatmaps(maps, (64, 64), True, 11)
    assert np.allclose(keypoints[0, 0], [32, 32], atol=1) and np.isnan(keypoints[0, 1]).all()
    keypoints, _ = decode_heatmaps(maps[:, :1], (64, 64), True, 11)
    assert np.allclose(keypoints[0, 0], [32, 32], atol=1)


@pytest.mark.slow   # trains until the damaged image is reached
@pytest.mark.parametrize('workers', ['0', '2'])
def test_train_script_with_a_truncated_png_ends_in_one_line(data_root, tmp_path, workers):
    """The error surfaces from train_cephalometric.py as one `error:` line on stderr (the notes
    before it aside), with data-loading workers too, and no OpenCV warning or traceback."""
    from tests.helpers import run_script
    path = _truncate_first_image(data_root)
    result = run_script('train_cephalometric.py', '--data-root', data_root, '--work-dir',
                        tmp_path / 'work', '--no-pretrained', '--epochs', '1', '--batch-size',
                        '4', '--input-size', '64', '--workers', workers, '--framing-epochs', '0',
                        '--warmup-iters', '1', '--device', 'cpu', check=False, timeout=900)
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith('note: ')]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
    assert path.name in lines[0] and 'cannot be decoded' in lines[0], lines[0]
    assert 'prepare_cephalometric_data.py' in lines[0] and '--overwrite' in lines[0]


def test_old_metainfo_py_with_a_400_digit_number_is_one_line(data_root, capsys):
    from tests.test_hostile_data import legacy_metainfo_text
    names = dataset_reader.read_landmark_names(str(data_root))
    text = legacy_metainfo_text(names).replace('sigmas=[0.025', 'sigmas=[' + '7' * 400, 1)
    (data_root / 'metainfo.json').unlink()
    (data_root / 'metainfo.py').write_text(text)
    refused(capsys, lambda: dataset_reader.read_metainfo(str(data_root)), 'metainfo.py',
            'sigmas', '--overwrite')


def test_prepare_refuses_a_patient_id_too_long_for_a_file_name(tmp_path, capsys):
    frame = make_demo_dataframe(num_patients=10, seed=0, image_size=64)
    frame.loc[0, 'patient_id'] = 'p' * 300
    table = tmp_path / 'long.pkl'
    frame.to_pickle(table)
    out = tmp_path / 'out'
    code, err = prepare(capsys, '--input', table, '--out-dir', out)
    one_line(code, err, 'patient ids too long for a file name', "'pppp", 'shorten them')
    assert not out.exists()


def test_prepare_refuses_a_ruler_file_that_is_a_device(table, tmp_path, capsys):
    code, err = prepare(capsys, '--input', table, '--out-dir', tmp_path / 'out', '--ruler-json',
                        '/dev/zero')
    one_line(code, err, "ruler file '/dev/zero' is not a regular file")


def test_inference_json_read_back_refuses_a_device(capsys):
    from cephalometric.prediction.results import load_records
    refused(capsys, lambda: load_records('/dev/zero'), '/dev/zero', 'not a regular file')


def test_hostile_depth_map_of_an_rgbd_dataset_is_one_line_from_a_loader_worker(tmp_path):
    """LoadDepth refuses a depth map whose header claims 8 TiB; from a worker that is still one
    line (the DataLoader's re-raise keeps only the message)."""
    from torch.utils.data import DataLoader

    import cephalometric.mmpose_plugins.transforms  # noqa: F401  (registers LoadDepth)
    from cephalometric.errors import UserError
    table = tmp_path / 'table.pkl'
    make_demo_dataframe(num_patients=10, seed=0, image_size=64).to_pickle(table)
    root = tmp_path / 'rgbd'
    prepare_dataset(table, root, image_source='rgbd', progress=False)
    dataset = build_dataset(root, LOAD + [dict(type='LoadDepth')], test_mode=False)
    for depth in (root / 'images').glob('*.npy'):
        _npy_header(depth, (1 << 20, 1 << 20))
    loader = DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=lambda batch: batch)
    with pytest.raises(UserError) as caught:
        next(iter(loader))
    message = str(caught.value)
    assert '\n' not in message and 'Traceback' not in message, message
    assert '.npy' in message and 'claims 1048576x1048576 pixels' in message, message


def test_annotations_whose_landmark_order_differs_from_the_metainfo(data_root, capsys):
    def change(data):
        names = data['categories'][0]['keypoints']
        names[0], names[1] = names[1], names[0]
    edit_json(data_root / 'annotations' / 'train.json', change)
    refused(capsys, lambda: build_dataset(data_root), 'names or order differ', '--overwrite')
