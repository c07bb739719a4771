"""prepare_cephalometric_data.py: every accepted input variant and every refusal, on tiny tables."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import prepare_cephalometric_data as cli  # the repository root is on sys.path (conftest.py)
from cephalometric import outputs
from cephalometric.data import decoding
from cephalometric.data import writer as dataset_writer
from cephalometric.data.reader import SPLITS, read_metainfo
from cephalometric.errors import run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS

ROOT = Path(__file__).resolve().parents[1]

SIZE = 16
# Column prefixes as the user's pickle spells them ('Gonion _x' has a space before the underscore).
USER_PREFIXES = ['Gonion ' if name == 'Gonion' else name for name in STANDARD_LANDMARKS]


# --------------------------------------------------------------------------------------------------
# Building small tables


def rgb(seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_frame(num: int = 10, prefixes=USER_PREFIXES, flat: bool = True, sets=None,
               with_class: bool = True, with_depth: bool = False, ids=None) -> pd.DataFrame:
    """The user's layout: patient_id, Image (flat by default), set, class, <name>_x/_y pixels."""
    rng = np.random.default_rng(1)
    sets = sets if sets is not None else ['train'] * (num - 2) + ['dev', 'test']
    data = {'patient_id': ids if ids is not None else [100 + i for i in range(num)],
            'Image': [rgb(i).reshape(-1, 3) if flat else rgb(i) for i in range(num)],
            'set': sets}
    if with_depth:
        data['depth_feature'] = [rng.random(SIZE * SIZE).astype(np.float32) for _ in range(num)]
    if with_class:
        data['class'] = [1 + i % 3 for i in range(num)]
    for prefix in prefixes:
        data[f'{prefix}_x'] = rng.uniform(1, SIZE - 1, num).round(2)
        data[f'{prefix}_y'] = rng.uniform(1, SIZE - 1, num).round(2)
    return pd.DataFrame(data)


def run(tmp_path: Path, table, *args: str, out: str = 'out', capsys=None) -> int:
    """Pickle `table` and run the CLI on it in-process; returns the exit status."""
    path = tmp_path / 'input.pkl'
    if isinstance(table, pd.DataFrame):
        table.to_pickle(path)
    else:
        path.write_bytes(pickle.dumps(table))
    return run_cli(cli.main, ['--input', str(path), '--out-dir', str(tmp_path / out), *args])


def ok(tmp_path: Path, table, *args: str, out: str = 'out') -> Path:
    code = run(tmp_path, table, *args, out=out)
    assert code == 0
    return tmp_path / out


def coco(out: Path, split: str) -> dict:
    return json.loads((out / 'annotations' / f'{split}.json').read_text())


def all_annotations(out: Path) -> dict:
    """patient_id -> (image entry, annotation entry) over all splits."""
    found = {}
    for split in SPLITS:
        data = coco(out, split)
        by_id = {a['image_id']: a for a in data['annotations']}
        for image in data['images']:
            found[image['patient_id']] = (image, by_id[image['id']], split)
    return found


def no_leftovers(tmp_path: Path, out: str = 'out') -> None:
    names = [p.name for p in tmp_path.iterdir()]
    assert out not in names
    assert not [n for n in names if '.tmp-' in n or '.old-' in n], names


def refused(tmp_path, capsys, table, *args, fragments=(), out='out') -> str:
    """Run the CLI expecting a one-line error and nothing written; returns the message."""
    capsys.readouterr()
    code = run(tmp_path, table, *args, out=out)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith('error: ') and '\n' not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    if out:
        no_leftovers(tmp_path, out)
    return err


# --------------------------------------------------------------------------------------------------
# The user's layout, end to end


def test_user_layout_writes_the_documented_files(tmp_path, capsys):
    frame = make_frame(with_depth=True)
    out = ok(tmp_path, frame)
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, 'annotations', 'images',
                                                     'metainfo.json', 'summary.json']
    assert sorted(p.name for p in (out / 'annotations').iterdir()) == ['test.json', 'train.json',
                                                                       'val.json']
    assert sorted(p.name for p in (out / 'images').iterdir()) == [f'{100 + i}.png'
                                                                  for i in range(10)]
    assert 'standard 19-landmark photograph set' in stdout and 'not the standard' not in stdout
    assert 'test split is written for final evaluation only' in stdout

    train = coco(out, 'train')
    names = train['categories'][0]['keypoints']
    assert names[10] == 'Gonion' and names == list(STANDARD_LANDMARKS)
    assert train['categories'][0]['skeleton'] == [] and train['categories'][0]['name'] == 'face'
    found = all_annotations(out)
    ids = sorted(image['id'] for image, _, _ in found.values())
    assert ids == list(range(1, 11))                     # unique across splits, from 1
    columns = [c for p in USER_PREFIXES for c in (f'{p}_x', f'{p}_y')]
    for _, row in frame.iterrows():
        image, ann, split = found[str(row['patient_id'])]
        assert split == {'train': 'train', 'dev': 'val', 'test': 'test'}[row['set']]
        assert (image['width'], image['height'], image['file_name']) == (
            SIZE, SIZE, f"{row['patient_id']}.png")
        assert ann['bbox'] == [0, 0, SIZE, SIZE] and ann['area'] == SIZE * SIZE
        assert ann['iscrowd'] == 0 and ann['category_id'] == 1 and ann['id'] == image['id']
        assert ann['skeletal_class'] == row['class'] and ann['mm_per_pixel'] is None
        assert ann['num_keypoints'] == 19
        points = np.array(ann['keypoints']).reshape(-1, 3)
        np.testing.assert_allclose(points[:, :2].ravel(), row[columns].to_numpy(float), atol=1e-3)
        assert set(points[:, 2]) == {2}
        png = cv2.cvtColor(cv2.imread(str(out / 'images' / image['file_name'])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(png, row['Image'].reshape(SIZE, SIZE, 3))


def test_coco_files_load_with_xtcocotools_and_keypoints_round_trip(tmp_path):
    COCO = pytest.importorskip('xtcocotools.coco').COCO
    frame = make_frame()
    out = ok(tmp_path, frame)
    api = COCO(str(out / 'annotations' / 'train.json'))
    assert len(api.getImgIds()) == 8
    first = api.loadImgs(api.getImgIds())[0]
    ann = api.loadAnns(api.getAnnIds(imgIds=[first['id']]))[0]
    row = frame[frame.patient_id.astype(str) == first['patient_id']].iloc[0]
    assert ann['keypoints'][:2] == [pytest.approx(row['sella_x'], abs=1e-3),
                                    pytest.approx(row['sella_y'], abs=1e-3)]
    empty = COCO(str(out / 'annotations' / 'test.json'))
    assert len(empty.getImgIds()) == 1


def test_test_json_written_even_when_empty(tmp_path):
    out = ok(tmp_path, make_frame(sets=['train'] * 8 + ['dev'] * 2))
    test = coco(out, 'test')
    assert test['images'] == [] and test['annotations'] == []
    assert test['categories'][0]['keypoints'][0] == 'sella'


def test_metainfo_parses_in_mmpose(tmp_path):
    out = ok(tmp_path, make_frame(prefixes=['sella', "pog'", 'Gonion ']))
    info = json.loads((out / 'metainfo.json').read_text())     # data, never code
    assert [info['keypoint_info'][str(i)]['name'] for i in range(3)] == ['sella', "pog'", 'Gonion']
    assert all(kp['swap'] == '' for kp in info['keypoint_info'].values())
    assert info['sigmas'] == [0.025] * 3 and info['joint_weights'] == [1.0] * 3
    assert len({tuple(kp['color']) for kp in info['keypoint_info'].values()}) == 3
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (lets mmpose import on mmcv-lite)

    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    meta = parse_pose_metainfo(read_metainfo(str(out)))
    assert meta['num_keypoints'] == 3 and meta['keypoint_id2name'][1] == "pog'"
    assert meta['flip_indices'] == [0, 1, 2]


def test_summary_json_and_table(tmp_path, capsys):
    frame = make_frame()
    frame.loc[0, 'sella_x'] = np.nan
    out = ok(tmp_path, frame)
    stdout = capsys.readouterr().out
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['landmarks'] == list(STANDARD_LANDMARKS)
    assert summary['input'] == str((tmp_path / 'input.pkl').resolve())
    assert summary['options']['seed'] == 0 and summary['options']['image_source'] == 'rgb'
    assert {s: v['images'] for s, v in summary['splits'].items()} == {'train': 8, 'val': 1,
                                                                      'test': 1}
    assert summary['splits']['train']['classes'] == {'1': 3, '2': 3, '3': 2}
    assert summary['missing_landmarks'] == 1 and summary['image_sizes'] == {'16x16': 10}
    for word in ('split', 'train', 'val', 'test', 'total', '16x16', 'mm/px known', '1:3 2:3 3:2'):
        assert word in stdout


def test_two_runs_are_byte_identical(tmp_path):
    frame = make_frame(with_depth=True)
    first, second = ok(tmp_path, frame, out='a'), ok(tmp_path, frame, out='b')
    files = sorted(p.relative_to(first) for p in first.rglob('*') if p.is_file())
    assert len(files) == 10 + 3 + 3          # images, splits, metainfo + summary + marker
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


# --------------------------------------------------------------------------------------------------
# Accepted variants: column names, tables, ids


@pytest.mark.parametrize('gonion', ['Gonion _x', 'Gonion_x', 'Gonion x', 'GONION_X',
                                    ' Gonion  _x '])
def test_landmark_column_spellings(tmp_path, capsys, gonion):
    frame = make_frame(prefixes=STANDARD_LANDMARKS)
    frame = frame.rename(columns={'Gonion_x': gonion, 'Gonion_y': gonion.replace('x', 'y')
                                  .replace('X', 'Y')})
    frame = frame.rename(columns={'ST Pogonion_x': 'ST  Pogonion_x', 'sella_y': 'sella y'})
    out = ok(tmp_path, frame)
    names = coco(out, 'train')['categories'][0]['keypoints']
    assert names[10].lower() == 'gonion' and names[17] == 'ST Pogonion' and names[0] == 'sella'
    assert 'not the standard' not in capsys.readouterr().out


def test_role_columns_found_case_insensitively(tmp_path, capsys):
    frame = make_frame(with_depth=True).rename(columns={
        'Image': 'img', 'patient_id': 'Patient_ID', 'set': ' SET ', 'class': 'Class',
        'depth_feature': 'Depth_Feature'})
    out = ok(tmp_path, frame, '--image-source', 'depth')
    found = all_annotations(out)
    assert set(found) == {str(100 + i) for i in range(10)}
    assert found['108'][2] == 'val' and found['109'][2] == 'test'
    assert found['101'][1]['skeletal_class'] == 2
    assert 'row index' not in capsys.readouterr().out


def test_without_patient_id_the_row_index_is_used_with_a_note(tmp_path, capsys):
    out = ok(tmp_path, make_frame().drop(columns='patient_id'))
    assert 'no patient_id column: using the row index' in capsys.readouterr().out
    assert sorted((out / 'images').iterdir())[0].name == '0.png'
    assert set(all_annotations(out)) == {str(i) for i in range(10)}


def test_list_of_dicts_pickle_is_accepted(tmp_path):
    out = ok(tmp_path, make_frame().to_dict('records'))
    assert len(all_annotations(out)) == 10


def test_custom_three_landmark_set_with_a_note(tmp_path, capsys):
    out = ok(tmp_path, make_frame(prefixes=['Pogonion', 'Orbitale', 'Porion']))
    stdout = capsys.readouterr().out
    assert 'not the standard 19-point photograph set (3 found)' in stdout
    assert 'custom set of 3 landmarks' in stdout
    train = coco(out, 'train')
    assert train['categories'][0]['keypoints'] == ['Pogonion', 'Orbitale', 'Porion']
    assert len(train['annotations'][0]['keypoints']) == 9
    assert '"name": "Porion"' in (out / 'metainfo.json').read_text()


def test_missing_landmarks_become_invisible_and_are_counted(tmp_path, capsys):
    frame = make_frame()
    frame['nasion_x'] = frame['nasion_x'].astype(object)
    frame.loc[0, 'nasion_x'] = None          # one coordinate missing: the point is missing
    frame.loc[0, 'Menton_x'] = np.nan
    frame.loc[0, 'Menton_y'] = np.nan
    out = ok(tmp_path, frame)
    ann = all_annotations(out)['100'][1]
    points = np.array(ann['keypoints']).reshape(-1, 3)
    assert points[1].tolist() == [0, 0, 0] and points[11].tolist() == [0, 0, 0]
    assert ann['num_keypoints'] == 17 and points[0, 2] == 2
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['splits']['train']['missing_landmarks'] == 2


# --------------------------------------------------------------------------------------------------
# Accepted variants: images


def expected_image(seed=0, height=SIZE, width=SIZE):
    return rgb(seed, height, width)


@pytest.mark.parametrize('make, expect', [
    (lambda a: a.reshape(-1, 3), lambda a: a),                                   # flat (H*W, 3)
    (lambda a: a, lambda a: a),                                                  # (H, W, 3)
    (lambda a: a[:, :, 0], lambda a: np.repeat(a[:, :, :1], 3, 2)),              # (H, W)
    (lambda a: a[:, :, :1], lambda a: np.repeat(a[:, :, :1], 3, 2)),             # (H, W, 1)
    (lambda a: a / 255.0, lambda a: a),                                          # float in [0, 1]
    (lambda a: a.astype(np.float64), lambda a: a),                               # float in [0, 255]
    (lambda a: a.tolist(), lambda a: a),                                         # nested lists
    (lambda a: a.reshape(-1, 3).tolist(), lambda a: a),                          # flat nested lists
    (lambda a: np.moveaxis(a, -1, 0), lambda a: a),                              # (3, H, W)
])
def test_decode_image_layouts(make, expect):
    array = expected_image()
    image = decoding.decode_image(make(array))
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(image, expect(array))


def test_decode_image_flat_sizes():
    array = rgb(0, 6, 4)                                       # H=6, W=4
    flat = array.reshape(-1, 3)
    np.testing.assert_array_equal(decoding.decode_image(flat, '4x6'), array)
    np.testing.assert_array_equal(decoding.decode_image(flat, (4, 6)), array)
    with pytest.raises(ValueError, match='not square'):
        decoding.decode_image(flat)
    with pytest.raises(ValueError, match='cannot be 5x5'):
        decoding.decode_image(flat, 5)
    square = rgb(0, 5, 5).reshape(-1, 3)
    assert decoding.decode_image(square, 5).shape == (5, 5, 3)


@pytest.mark.parametrize('bad, reason', [
    (np.zeros((4, 4, 2)), 'not an image'),
    (np.zeros((2, 2, 2, 3)), 'not an image'),
    (np.zeros(12), 'not an image'),
    (None, 'no image'),
    (np.full((4, 4, 3), 300), '0..255'),
    (np.full((4, 4, 3), np.nan), 'NaN'),
    ([[1, 2], [3]], 'ragged'),
    (np.zeros((0, 3)), 'empty'),
])
def test_decode_image_refuses_bad_shapes_and_values(bad, reason):
    with pytest.raises(ValueError, match=reason):
        decoding.decode_image(bad)


def test_images_of_different_sizes_and_formats_in_one_table(tmp_path):
    frame = make_frame(num=5, flat=False, sets=['train'] * 3 + ['dev', 'test'],
                       prefixes=['sella', 'nasion'])
    images = [rgb(0, 20, 30), rgb(1, 30, 20).reshape(-1, 3) / 255.0, rgb(2)[:, :, 0],
              rgb(3).tolist(), rgb(4).astype(np.float32)]
    frame['Image'] = images
    frame.loc[0, 'sella_x'] = 29.5        # inside the 30-wide image only
    out = ok(tmp_path, frame, '--image-size', '20x30')
    found = all_annotations(out)
    assert (found['100'][0]['width'], found['100'][0]['height']) == (30, 20)
    assert (found['101'][0]['width'], found['101'][0]['height']) == (20, 30)
    assert found['100'][1]['bbox'] == [0, 0, 30, 20] and found['100'][1]['area'] == 600
    png = cv2.imread(str(out / 'images' / '101.png'))
    np.testing.assert_array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), rgb(1, 30, 20))
    gray = cv2.imread(str(out / 'images' / '102.png'))
    np.testing.assert_array_equal(gray[:, :, 0], rgb(2)[:, :, 0])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['image_sizes'] == {'16x16': 3, '20x30': 1, '30x20': 1}


def test_image_size_as_a_single_number_for_flat_images(tmp_path):
    frame = make_frame(num=4, sets=['train', 'train', 'dev', 'test'])
    out = ok(tmp_path, frame, '--image-size', str(SIZE))
    assert all_annotations(out)['100'][0]['width'] == SIZE


def test_non_square_flat_image_without_image_size_is_refused(tmp_path, capsys):
    frame = make_frame(num=4, sets=['train', 'train', 'dev', 'test'], prefixes=['sella'])
    frame['Image'] = [rgb(i, 6, 4).reshape(-1, 3) for i in range(4)]
    frame['sella_x'], frame['sella_y'] = 1.0, 1.0
    refused(tmp_path, capsys, frame, fragments=('100, 101, 102, 103', 'not square',
                                                '--image-size WIDTHxHEIGHT'))
    out = ok(tmp_path, frame, '--image-size', '4x6')
    assert all_annotations(out)['100'][0]['height'] == 6


# --------------------------------------------------------------------------------------------------
# Depth source


def test_decode_depth_normalises_each_map_and_zeroes_non_finite_values():
    depth = np.array([[1.0, 2.0], [3.0, np.nan]])
    expected = np.array([[0, 128], [255, 0]], np.uint8)
    for layout in (depth, depth.reshape(-1), depth.reshape(-1, 1), depth[:, :, None]):
        image = decoding.decode_depth(layout)
        assert image.shape == (2, 2, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[:, :, 0], expected)
        np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])
    with_inf = decoding.decode_depth(np.array([5.0, np.inf, -np.inf, 7.0]))
    np.testing.assert_array_equal(with_inf[:, :, 0], [[0, 0], [0, 255]])
    assert not decoding.decode_depth(np.full(4, 3.0)).any()       # flat map: no range, all zero
    with pytest.raises(ValueError, match='depth shape'):
        decoding.decode_depth(np.zeros((2, 2, 3)))


def test_depth_source_writes_depth_images(tmp_path):
    frame = make_frame(with_depth=True)
    frame['depth_feature'] = [np.arange(SIZE * SIZE, dtype=np.float32).reshape(-1, 1) + i
                              for i in range(10)]
    frame.at[1, 'depth_feature'] = np.arange(SIZE * SIZE, dtype=np.float64).reshape(SIZE, SIZE)
    out = ok(tmp_path, frame, '--image-source', 'depth')
    for pid in ('100', '101'):
        png = cv2.imread(str(out / 'images' / f'{pid}.png'))
        assert png[0, 0].tolist() == [0, 0, 0] and png[-1, -1].tolist() == [255, 255, 255]
    assert json.loads((out / 'summary.json').read_text())['options']['image_source'] == 'depth'


def test_depth_source_without_depth_column_is_refused(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame(), '--image-source', 'depth',
            fragments=('depth_feature', '--image-source rgb'))


# --------------------------------------------------------------------------------------------------
# Splits


def test_set_values_are_mapped_case_insensitively(tmp_path):
    sets = ['Train', 'TRAIN', ' train ', 'dev', 'VAL', 'valid', 'Validation', 'test', 'Test',
            'train']
    found = all_annotations(ok(tmp_path, make_frame(sets=sets)))
    assert [found[str(100 + i)][2] for i in range(10)] == ['train'] * 3 + ['val'] * 4 + \
        ['test'] * 2 + ['train']


def test_unknown_set_values_are_refused_by_name(tmp_path, capsys):
    sets = ['train'] * 7 + ['dev', 'holdout', None]
    refused(tmp_path, capsys, make_frame(sets=sets),
            fragments=("'holdout' (1 rows)", 'empty (1 rows)', 'drop the set column'))


def split_of(out: Path) -> dict:
    return {pid: split for pid, (_, _, split) in all_annotations(out).items()}


def test_automatic_split_is_seeded_and_ignores_row_order(tmp_path, capsys):
    frame = make_frame(num=40, sets=['x'] * 40).drop(columns='set')
    first = ok(tmp_path, frame, out='a')
    shuffled = frame.sample(frac=1.0, random_state=3)
    second = ok(tmp_path, shuffled, out='b')
    assert split_of(first) == split_of(second)
    assert (first / 'annotations' / 'val.json').read_bytes() == \
        (second / 'annotations' / 'val.json').read_bytes()
    assert Counter_of(split_of(first)) == {'train': 32, 'val': 4, 'test': 4}
    other = ok(tmp_path, frame, '--seed', '1', '--val-fraction', '0.25', '--test-fraction', '0',
               out='c')
    assert Counter_of(split_of(other)) == {'train': 30, 'val': 10}
    assert 'random by patient (seed 0, val 0.1, test 0.1)' in capsys.readouterr().out
    seed_two = ok(tmp_path, frame, '--seed', '2', out='d')
    assert split_of(seed_two) != split_of(first)


def Counter_of(mapping: dict) -> dict:
    counts = {}
    for value in mapping.values():
        counts[value] = counts.get(value, 0) + 1
    return counts


def test_fractions_are_ignored_with_a_note_when_set_exists(tmp_path, capsys):
    out = ok(tmp_path, make_frame(), '--val-fraction', '0.5')
    assert 'ignored' in capsys.readouterr().out
    assert len(coco(out, 'val')['images']) == 1


def test_empty_validation_split_is_refused(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame(sets=['train'] * 9 + ['test']),
            fragments=('validation split is empty', 'add dev rows',
                       'drop the set column to split automatically'))
    no_set = make_frame().drop(columns='set')
    refused(tmp_path, capsys, no_set, '--val-fraction', '0',
            fragments=('validation split is empty', '--val-fraction above 0'))


def test_empty_train_split_is_refused(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame(sets=['dev'] * 5 + ['test'] * 5),
            fragments=('train split is empty',))
    refused(tmp_path, capsys, make_frame().drop(columns='set'), '--val-fraction', '0.5',
            '--test-fraction', '0.5', fragments=('sum to less than 1',))


# --------------------------------------------------------------------------------------------------
# Pixel spacing


def spacing_of(out: Path) -> dict:
    return {pid: ann['mm_per_pixel'] for pid, (_, ann, _) in all_annotations(out).items()}


def test_mm_per_pixel_for_all_images(tmp_path, capsys):
    out = ok(tmp_path, make_frame(), '--mm-per-pixel', '0.25')
    assert set(spacing_of(out).values()) == {0.25}
    assert '8/8' in capsys.readouterr().out
    refused(tmp_path, capsys, make_frame(), '--mm-per-pixel', '-1', fragments=('positive',),
            out='bad')


@pytest.mark.parametrize('column', ['mm_per_pixel', 'Pixel Spacing'])
def test_spacing_column_found_automatically(tmp_path, column):
    frame = make_frame()
    frame[column] = [0.1] * 9 + [np.nan]
    spacing = spacing_of(ok(tmp_path, frame))
    assert spacing['100'] == 0.1 and spacing['109'] is None


def test_spacing_column_named_on_the_command_line(tmp_path, capsys):
    frame = make_frame()
    frame['scale'] = np.linspace(0.1, 0.2, 10)
    spacing = spacing_of(ok(tmp_path, frame, '--mm-per-pixel-column', 'Scale'))
    assert spacing['109'] == pytest.approx(0.2)
    refused(tmp_path, capsys, frame, '--mm-per-pixel-column', 'nope', out='x',
            fragments=("'nope' is not a column",))
    refused(tmp_path, capsys, frame, '--mm-per-pixel-column', 'scale', '--mm-per-pixel', '1',
            out='y', fragments=('give only one',))


def test_ruler_json_spacing_matches_a_hand_calculation(tmp_path, capsys):
    ruler = {'100': {'ruler_point_up_x': 300, 'ruler_point_up_y': 100,
                     'ruler_point_down_x': 300, 'ruler_point_down_y': 160},     # 60 px long
             '101': {'ruler_point_up_x': 0, 'ruler_point_up_y': 0,
                     'ruler_point_down_x': 30, 'ruler_point_down_y': 40},       # 50 px long
             '102': {'ruler_point_up_x': None, 'ruler_point_up_y': 1,
                     'ruler_point_down_x': 2, 'ruler_point_down_y': 3},         # not marked
             '103': {'ruler_point_up_x': 5, 'ruler_point_up_y': 5,
                     'ruler_point_down_x': 5, 'ruler_point_down_y': 5},         # zero length
             '104': None, '105': {'ruler_point_up_x': 1}}
    path = tmp_path / 'ruler.json'
    path.write_text(json.dumps(ruler))
    out = ok(tmp_path, make_frame(), '--ruler-json', str(path))
    spacing = spacing_of(out)
    # 10 mm over 60 px of a 600 px photo; the prepared image is 16 px wide: x 600/16.
    assert spacing['100'] == pytest.approx(10 / 60 * 600 / SIZE)
    assert spacing['101'] == pytest.approx(10 / 50 * 600 / SIZE)
    for pid in ('102', '103', '104', '105', '106'):
        assert spacing[pid] is None
    assert 'no entry for 4 patient(s)' in capsys.readouterr().out
    out = ok(tmp_path, make_frame(), '--ruler-json', str(path), '--ruler-image-size', '300',
             out='small')
    assert spacing_of(out)['100'] == pytest.approx(10 / 60 * 300 / SIZE)


def test_bad_ruler_json_is_refused(tmp_path, capsys):
    (tmp_path / 'bad.json').write_text('{not json')
    refused(tmp_path, capsys, make_frame(), '--ruler-json', str(tmp_path / 'bad.json'),
            fragments=('cannot read ruler file', 'JSON'))
    refused(tmp_path, capsys, make_frame(), '--ruler-json', str(tmp_path / 'none.json'),
            fragments=('does not exist', '--ruler-json'))
    (tmp_path / 'list.json').write_text('[1, 2]')
    refused(tmp_path, capsys, make_frame(), '--ruler-json', str(tmp_path / 'list.json'),
            fragments=('keyed by patient id',))


# --------------------------------------------------------------------------------------------------
# Coordinates outside the image


def test_coordinates_outside_the_image_are_refused_by_patient_and_landmark(tmp_path, capsys):
    frame = make_frame()
    frame.loc[0, 'sella_x'] = SIZE + 0.5
    frame.loc[0, 'Menton_y'] = -1
    frame.loc[3, 'nasion_y'] = 100
    refused(tmp_path, capsys, frame, fragments=('3 landmark(s) lie outside', '100 (sella, Menton)',
                                                '103 (nasion)', '--clip'))


def test_clip_moves_points_onto_the_border_and_reports_the_count(tmp_path, capsys):
    frame = make_frame()
    frame.loc[0, 'sella_x'] = SIZE + 0.5
    frame.loc[0, 'Menton_y'] = -1
    frame.loc[1, 'nasion_x'] = SIZE          # exactly on the border: inside, not clipped
    out = ok(tmp_path, frame, '--clip')
    assert '--clip moved 2 landmark(s)' in capsys.readouterr().out
    found = all_annotations(out)
    points = np.array(found['100'][1]['keypoints']).reshape(-1, 3)
    assert points[0, 0] == SIZE and points[11, 1] == 0 and points[11, 2] == 2
    assert np.array(found['101'][1]['keypoints']).reshape(-1, 3)[1, 0] == SIZE
    assert json.loads((out / 'summary.json').read_text())['clipped_landmarks'] == 2


# --------------------------------------------------------------------------------------------------
# Refusals


def test_missing_input_file(tmp_path, capsys):
    code = run_cli(cli.main, ['--input', str(tmp_path / 'nope.pkl'),
                              '--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert code == 2 and 'does not exist' in err and '--input' in err
    no_leftovers(tmp_path)


def test_folder_instead_of_file(tmp_path, capsys):
    code = run_cli(cli.main, ['--input', str(tmp_path), '--out-dir', str(tmp_path / 'out')])
    assert code == 2 and 'is a folder' in capsys.readouterr().err


def test_file_that_is_not_a_pickle(tmp_path, capsys):
    (tmp_path / 'input.csv').write_text('sella_x,sella_y\n1,2\n')
    code = run_cli(cli.main, ['--input', str(tmp_path / 'input.csv'),
                              '--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and 'not a readable pandas pickle' in err and '\n' not in err
    no_leftovers(tmp_path)


@pytest.mark.parametrize('table, what', [(42, 'holds a int'), (pd.Series([1, 2]), 'holds a Series'),
                                         ([1, 2], 'holds a list')])
def test_pickle_that_is_not_a_table(tmp_path, capsys, table, what):
    refused(tmp_path, capsys, table, fragments=(what, 'DataFrame'))


def test_empty_table(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame().iloc[:0], fragments=('has no rows',))


def test_no_image_column(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame().drop(columns='Image'),
            fragments=('no image column', '"Image"'))


def test_no_landmark_columns(tmp_path, capsys):
    frame = make_frame()[['patient_id', 'Image', 'set']]
    refused(tmp_path, capsys, frame, fragments=('no landmark columns', '_x'))


def test_x_column_without_y(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame().drop(columns='Menton_y'),
            fragments=("'Menton_x' has no matching", 'Menton_y'))


def test_duplicate_landmark_after_normalisation(tmp_path, capsys):
    frame = make_frame(prefixes=['sella', 'nasion'])
    frame['Sella _x'] = 1.0
    frame['Sella _y'] = 1.0
    refused(tmp_path, capsys, frame, fragments=('two x columns',))


def test_images_whose_shape_is_not_understood_are_named(tmp_path, capsys):
    frame = make_frame()
    for row in range(6):
        frame.at[row, 'Image'] = np.zeros((4, 4, 2), np.uint8)
    refused(tmp_path, capsys, frame,
            fragments=('6 patient(s) (100, 101, 102, 103, 104 and 1 more)', 'shape (4, 4, 2)'))


def test_duplicate_patient_ids(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame(ids=[1, 2, 3, 3, 5, 6, 7, 1, 1, 10]),
            fragments=('duplicate patient ids', '1 (3 rows)', '3 (2 rows)'))


def test_patient_ids_that_collide_as_file_names(tmp_path, capsys):
    ids = ['a/b', 'a_b'] + [f'p{i}' for i in range(8)]
    refused(tmp_path, capsys, make_frame(ids=ids), fragments=("'a/b' / 'a_b'", 'rename'))
    ids = ['P1', 'p1'] + [f'q{i}' for i in range(8)]
    refused(tmp_path, capsys, make_frame(ids=ids), fragments=("'P1' / 'p1'",))


def test_ids_are_sanitised_for_file_names(tmp_path):
    ids = ['pat 1', 'ü/2'] + [f'p{i}' for i in range(8)]
    out = ok(tmp_path, make_frame(ids=ids))
    found = all_annotations(out)
    assert found['pat 1'][0]['file_name'] == 'pat_1.png'
    assert found['ü/2'][0]['file_name'] == '__2.png'
    assert (out / 'images' / 'pat_1.png').is_file()


def test_non_numeric_coordinates_and_classes(tmp_path, capsys):
    frame = make_frame()
    frame['sella_x'] = frame['sella_x'].astype(object)
    frame.loc[2, 'sella_x'] = 'twelve'
    refused(tmp_path, capsys, frame, fragments=('not numbers', '102 (sella_x)'))
    frame = make_frame()
    frame['class'] = ['I', 'II', 'III', 'Class 2', 2.0, '3', None, 1, 2, 'four']
    refused(tmp_path, capsys, frame, fragments=("109 ('four')", 'class column'))
    frame.loc[9, 'class'] = 3
    found = all_annotations(ok(tmp_path, frame))
    assert [found[str(100 + i)][1]['skeletal_class'] for i in range(7)] == [1, 2, 3, 2, 2, 3, None]


def test_bad_image_size_option(tmp_path, capsys):
    refused(tmp_path, capsys, make_frame(), '--image-size', '16by16',
            fragments=('--image-size', 'WIDTHxHEIGHT'))


# --------------------------------------------------------------------------------------------------
# Output folder handling


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = ok(tmp_path, make_frame())
    before = (out / 'annotations' / 'train.json').read_bytes()
    code = run(tmp_path, make_frame(num=6, sets=['train'] * 4 + ['dev', 'test']))
    assert code == 2 and '--overwrite' in capsys.readouterr().err
    assert (out / 'annotations' / 'train.json').read_bytes() == before

    # a file of the user's in our dataset: --overwrite refuses, naming it, and deletes nothing
    (out / 'images' / 'stale.png').write_bytes(b'old')
    assert run(tmp_path, make_frame(num=6, sets=['train'] * 4 + ['dev', 'test']),
               '--overwrite') == 2
    assert "'images/stale.png'" in capsys.readouterr().err
    assert (out / 'images' / 'stale.png').read_bytes() == b'old'
    (out / 'images' / 'stale.png').unlink()
    assert run(tmp_path, make_frame(num=6, sets=['train'] * 4 + ['dev', 'test']),
               '--overwrite') == 0
    assert len(coco(out, 'train')['images']) == 4                # replaced, not merged
    assert len(list((out / 'images').iterdir())) == 6
    assert not [p for p in tmp_path.iterdir() if '.tmp-' in p.name or '.old-' in p.name]


def test_overwrite_refuses_a_folder_that_is_not_a_prepared_dataset(tmp_path, capsys):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'thesis.docx').write_text('precious')
    assert run(tmp_path, make_frame(), '--overwrite') == 2
    assert 'not written by this project' in capsys.readouterr().err
    assert (tmp_path / 'out' / 'thesis.docx').read_text() == 'precious'


def test_failure_while_writing_leaves_nothing_and_keeps_the_old_dataset(tmp_path, capsys,
                                                                         monkeypatch):
    out = ok(tmp_path, make_frame())
    before = (out / 'summary.json').read_bytes()

    def broken(path, image):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(dataset_writer, 'write_png', broken)
    assert run(tmp_path, make_frame(num=6, sets=['train'] * 4 + ['dev', 'test']),
               '--overwrite') == 2
    err = capsys.readouterr().err
    assert 'could not write' in err and 'No space left' in err
    assert (out / 'summary.json').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['input.pkl', 'out']
    assert run(tmp_path, make_frame(), out='fresh') == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ['input.pkl', 'out']


def test_a_failed_final_rename_puts_the_old_dataset_back(tmp_path, monkeypatch):
    old, new = tmp_path / 'out', tmp_path / '.out.tmp-1'
    for folder, text in ((old, 'old'), (new, 'new')):
        folder.mkdir()
        (folder / 'summary.json').write_text(text)
    real_replace = os.replace

    def flaky(source, target):
        if '.tmp-' in str(source):
            raise OSError('device went away')
        return real_replace(source, target)

    monkeypatch.setattr(outputs.os, 'replace', flaky)
    with pytest.raises(OSError):
        outputs._swap_into_place(new, old)
    assert (old / 'summary.json').read_text() == 'old'
    assert not [p for p in tmp_path.iterdir() if '.old-' in p.name]


def test_refusal_from_a_subprocess_is_one_line_without_traceback(tmp_path):
    frame = make_frame()
    frame.loc[0, 'sella_x'] = 99.0
    frame.to_pickle(tmp_path / 'input.pkl')
    result = subprocess.run(
        [sys.executable, str(ROOT / 'prepare_cephalometric_data.py'), '--input',
         str(tmp_path / 'input.pkl'), '--out-dir', str(tmp_path / 'nested' / 'out')],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and '--clip' in lines[0]
    assert 'Traceback' not in result.stderr and result.stdout == ''
    assert sorted(p.name for p in tmp_path.iterdir()) == ['input.pkl']


# --------------------------------------------------------------------------------------------------
# The demo dataset (same layout as the user's pickle)


def test_demo_dataset_prepares_cleanly(tmp_path, capsys):
    from cephalometric.data import demo
    frame = demo.make_demo_dataframe(num_patients=12, seed=0, image_size=64)
    out = ok(tmp_path, frame)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['landmark_set'] == 'standard 19-landmark photograph set'
    assert summary['total_images'] == 12 and summary['missing_landmarks'] == 0
    assert summary['splits']['val']['images'] >= 1 and summary['image_sizes'] == {'64x64': 12}
    found = all_annotations(out)
    first = frame.iloc[0]
    points = np.array(found[first['patient_id']][1]['keypoints']).reshape(-1, 3)
    assert points[10, 0] == pytest.approx(first['Gonion _x'], abs=1e-3)
