"""Tests for the synthetic demo dataset (cephalometric/demo_data.py)."""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cephalometric.data.demo import main, make_demo_dataframe, write_demo_pickle
from cephalometric.errors import run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import skeletal_class, sna_snb_anb

REPO = Path(__file__).resolve().parents[1]
# Written out literally (not derived from the module) so a change to the layout fails here.
EXPECTED_COLUMNS = [
    'patient_id', 'Image', 'depth_feature', 'set', 'class',
    'sella_x', 'sella_y', 'nasion_x', 'nasion_y', 'A point_x', 'A point_y',
    'B point_x', 'B point_y',
    'upper 1 tip_x', 'upper 1 tip_y', 'upper 1 apex_x', 'upper 1 apex_y',
    'lower 1 tip_x', 'lower 1 tip_y', 'lower 1 apex_x', 'lower 1 apex_y',
    'ANS_x', 'ANS_y', 'PNS_x', 'PNS_y', 'Gonion _x', 'Gonion _y', 'Menton_x', 'Menton_y',
    'ST Nasion_x', 'ST Nasion_y', 'Tip of the nose_x', 'Tip of the nose_y',
    'Subnasal_x', 'Subnasal_y', 'Upper lip_x', 'Upper lip_y', 'Lower lip_x', 'Lower lip_y',
    'ST Pogonion_x', 'ST Pogonion_y', 'gnathion_x', 'gnathion_y']
SIZE = 224


@pytest.fixture(scope='module')
def frame():
    return make_demo_dataframe(60, seed=0)


def landmarks(row) -> np.ndarray:
    """(19, 2) landmark pixels of one record, in standard order."""
    return np.array([[row[c], row[c.replace('_x', '_y')]]
                     for c in EXPECTED_COLUMNS[5::2]], float)


def assert_same_frames(left: pd.DataFrame, right: pd.DataFrame):
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right)
    for column in left.columns:
        if column in ('Image', 'depth_feature'):
            holes = column == 'depth_feature'     # depth holes are NaN
            assert all(np.array_equal(a, b, equal_nan=holes)
                       for a, b in zip(left[column], right[column])), column
        else:
            assert left[column].tolist() == right[column].tolist(), column


def test_columns_are_the_real_pickle_layout(frame):
    assert list(frame.columns) == EXPECTED_COLUMNS


def test_dtypes_and_shapes(frame):
    assert frame['patient_id'].tolist()[:2] == ['demo_0001', 'demo_0002']
    assert frame['patient_id'].is_unique
    for image, depth in zip(frame['Image'], frame['depth_feature']):
        assert image.shape == (SIZE * SIZE, 3) and image.dtype == np.uint8
        assert depth.shape == (SIZE * SIZE,) and depth.dtype == np.float32
    assert frame['class'].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in EXPECTED_COLUMNS[5:])


def test_images_are_not_blank(frame):
    image = frame['Image'].iloc[0]
    assert image.std() > 20
    depth = frame['depth_feature'].iloc[0]
    # Holes (no reading) are NaN, as a depth camera leaves them; a few percent of the map.
    assert 0.3 < np.nanmin(depth) < 0.9 and 1.0 < np.nanmax(depth) < 1.7
    assert 0.002 < np.isnan(depth).mean() < 0.1


def test_splits_follow_fractions_and_are_never_empty():
    assert set(make_demo_dataframe(10)['set']) == {'train', 'dev', 'test'}
    counts = make_demo_dataframe(60)['set'].value_counts().to_dict()
    assert counts == {'train': 48, 'dev': 6, 'test': 6}
    halves = make_demo_dataframe(10, split_fractions=(0.5, 0.5, 0.0))['set'].value_counts()
    assert halves.to_dict() == {'train': 5, 'dev': 5}


def test_class_matches_anb_of_own_landmarks(frame):
    for _, row in frame.iterrows():
        anb = sna_snb_anb(STANDARD_LANDMARKS, landmarks(row))['ANB']
        assert row['class'] == skeletal_class(anb)
    assert frame['class'].nunique() >= 2


def test_class_mix_is_roughly_50_30_20():
    # Small images: the class comes from the landmarks, not the pixels, and they draw faster.
    shares = make_demo_dataframe(200, seed=1, image_size=64)['class'].value_counts(normalize=True)
    for klass, expected in ((1, 0.5), (2, 0.3), (3, 0.2)):
        assert abs(shares.get(klass, 0.0) - expected) < 0.1, shares.to_dict()


def test_deterministic_for_a_seed():
    assert_same_frames(make_demo_dataframe(8, seed=5), make_demo_dataframe(8, seed=5))
    other = make_demo_dataframe(8, seed=6)
    assert not np.array_equal(make_demo_dataframe(8, seed=5)['Image'][0], other['Image'][0])
    assert make_demo_dataframe(8, seed=5)['sella_x'][0] != other['sella_x'][0]


def test_records_do_not_depend_on_num_patients():
    assert_same_frames(make_demo_dataframe(12, seed=3).head(5), make_demo_dataframe(5, seed=3))


def test_landmarks_well_inside_image(frame):
    coords = np.stack([landmarks(row) for _, row in frame.iterrows()])
    assert coords.min() >= 8 - 1e-6 and coords.max() <= SIZE - 8 + 1e-6


def test_landmarks_in_anatomical_order(frame):
    names = list(STANDARD_LANDMARKS)
    for _, row in frame.iterrows():
        p = dict(zip(names, landmarks(row)))
        # Face looks right: points on one horizontal level are ordered back to front.
        assert p['sella'][0] < p['nasion'][0] < p['ST Nasion'][0]
        assert p['PNS'][0] < p['ANS'][0] < p['Subnasal'][0] < p['Tip of the nose'][0]
        assert p['A point'][0] < p['Upper lip'][0]
        assert p['B point'][0] < p['ST Pogonion'][0]
        # Top to bottom along the face; menton is the lowest bone point.
        assert p['nasion'][1] < p['ANS'][1] < p['A point'][1] < p['B point'][1] < p['Menton'][1]
        assert p['Menton'][1] == max(p[n][1] for n in names if not n.startswith('ST'))


def test_landmarks_sit_on_the_drawn_face(frame):
    """Every landmark is on the head; profile points have background straight in front of them."""
    names = list(STANDARD_LANDMARKS)
    for _, row in frame.iterrows():
        depth = row['depth_feature'].reshape(SIZE, SIZE)
        threshold = (np.nanmin(depth) + np.nanmax(depth)) / 2

        def near(x, y):   # the median reading around the point: holes are NaN
            x, y = int(round(x)), int(round(y))
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)   # all-NaN window: not near
                return np.nanmedian(depth[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4]) < threshold

        for name, (x, y) in zip(names, landmarks(row)):
            assert near(x - 2, y), name
        for name in ('Tip of the nose', 'Upper lip', 'Lower lip', 'ST Pogonion'):
            x, y = landmarks(row)[names.index(name)]
            assert not near(x + 4, y), name


def test_write_demo_pickle_round_trip(tmp_path):
    path = write_demo_pickle(tmp_path / 'new' / 'folder' / 'demo.pkl', num_patients=4, seed=2)
    assert path == tmp_path / 'new' / 'folder' / 'demo.pkl'
    assert_same_frames(pd.read_pickle(path), make_demo_dataframe(4, seed=2))
    assert [p.name for p in path.parent.iterdir()] == ['demo.pkl']  # no temporary file left


def test_cli_writes_pickle_and_reports(tmp_path):
    out = tmp_path / 'demo' / 'train_data_pure_depth.pkl'
    result = subprocess.run(
        [sys.executable, '-m', 'cephalometric.data.demo', '--out', str(out), '--num-patients', '10',
         '--seed', '1'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '10 records' in result.stdout and '8 train' in result.stdout
    assert len(pd.read_pickle(out)) == 10


def test_cli_rejects_bad_arguments_with_one_line(tmp_path, capsys):
    code = run_cli(main, ['--out', str(tmp_path / 'x.pkl'), '--num-patients', '0'])
    assert code == 2
    assert capsys.readouterr().err.startswith('error: --num-patients')
    assert run_cli(main, ['--out', str(tmp_path)]) == 2  # a folder, not a file
    assert list(tmp_path.iterdir()) == []
