"""evaluate.py: the files it writes, their agreement with each other and with the truth, its helpers
on hand-made inputs, its one-line errors, and its all-or-nothing output folder."""
import csv
import json
import os
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from cephalometric.data.reader import load_split
from cephalometric.errors import UserError
from cephalometric.evaluation import report
from cephalometric.evaluation import statistics as numbers
from cephalometric.landmarks import STANDARD_LANDMARKS
from tests.helpers import run_script

SPACING = 0.1  # mm per pixel given to every test image but the first (a mixed dataset)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope='module')
def spaced_data(demo_dataset, tmp_path_factory):
    """The demo dataset with a pixel spacing on all test images but the first."""
    _, prepared = demo_dataset
    root = tmp_path_factory.mktemp('spaced') / 'cephalometric'
    shutil.copytree(prepared, root)
    path = root / 'annotations' / 'test.json'
    coco = json.loads(path.read_text())
    for index, annotation in enumerate(coco['annotations']):
        annotation['mm_per_pixel'] = None if index == 0 else SPACING
    path.write_text(json.dumps(coco))
    return root


@pytest.fixture(scope='module')
def checkpoint(trained_run, tmp_path_factory):
    """A private copy, so the default out-dir (next to it) does not land in the shared run."""
    folder = tmp_path_factory.mktemp('ckpt')
    shutil.copy(trained_run / 'best_MRE.pth', folder / 'best_MRE.pth')
    return folder / 'best_MRE.pth'


@pytest.fixture(scope='module')
def evaluation(checkpoint, spaced_data):
    """Default out-dir, test split, 2 worst cases; returns the out-dir."""
    run_script('evaluate.py', '--checkpoint', checkpoint, '--data-root', spaced_data,
               '--device', 'cpu', '--worst', 2)
    return checkpoint.parent / 'eval_test'


def read_predictions(path, names):
    with open(path, newline='') as stream:
        rows = list(csv.DictReader(stream))
    ids = [row['patient_id'] for row in rows]
    points = np.array([[[float(row[f'{n}_x']), float(row[f'{n}_y'])] for n in names]
                       for row in rows])
    return ids, points


# -- the main run ---------------------------------------------------------------------------

def test_writes_the_documented_files_and_the_report_links_them(evaluation):
    for name in ('metrics.json', 'predictions.csv', 'report.md', 'per_landmark_errors.png',
                 'error_cdf.png', 'class_confusion.png', 'worst_cases.png'):
        assert (evaluation / name).is_file(), name
    text = (evaluation / 'report.md').read_text()
    assert 'test split' in text
    for heading in ('## Overall', '## Per landmark', '## Skeletal class', '## Measurements',
                    '## Confidence', '## Worst cases'):
        assert heading in text
    pictures = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    # the checkpoint has an error calibration (training stores one): its reliability diagram too
    assert sorted(pictures) == ['class_confusion.png', 'class_reliability.png', 'error_cdf.png',
                                'per_landmark_errors.png', 'worst_cases.png']
    for picture in pictures:  # relative, so the folder can be moved or zipped
        assert not os.path.isabs(picture) and (evaluation / picture).is_file()
    # Nothing left from the staging folder.
    assert not [p for p in os.listdir(evaluation.parent) if '.tmp-' in p]


def test_metrics_agree_with_predictions_csv_and_the_truth(evaluation, spaced_data):
    metrics = json.loads((evaluation / 'metrics.json').read_text())
    truth = load_split(str(spaced_data), 'test')
    ids, predicted = read_predictions(evaluation / 'predictions.csv', truth.names)
    assert ids == truth.patient_ids
    assert metrics['split'] == 'test' and metrics['num_images'] == len(ids)
    assert metrics['unit'] == 'mm'

    errors = np.linalg.norm(predicted - truth.keypoints, axis=-1)   # demo: every landmark visible
    per_image_px = errors.mean(axis=1)
    spaced = np.isfinite(truth.mm_per_pixel)
    assert spaced.sum() == len(ids) - 1
    overall = metrics['overall']
    # predictions.csv is rounded to 0.001 px.
    assert overall['MRE'] == pytest.approx(errors.mean(), abs=2e-3)
    assert overall['MRE_mm'] == pytest.approx(errors[spaced].mean() * SPACING, abs=2e-4)
    errors_mm = errors[spaced] * SPACING
    assert overall['SDR@2mm'] == pytest.approx(100 * np.mean(errors_mm <= 2), abs=1e-6)
    assert metrics['error_percentiles']['max'] == pytest.approx(errors_mm.max(), abs=2e-4)
    for name, column in zip(truth.names, errors.T):
        assert metrics['per_landmark'][name]['MRE'] == pytest.approx(column.mean(), abs=2e-3)
    for entry, px, has in zip(metrics['per_image'], per_image_px, spaced):
        assert entry['MRE'] == pytest.approx(px, abs=2e-3)
        assert (entry['MRE_mm'] is None) == (not has)

    # Worst cases: ranked by mm, so the image without a spacing is not among them.
    worst = metrics['worst_cases']
    ranked = sorted((e for e in metrics['per_image'] if e['MRE_mm'] is not None),
                    key=lambda e: -e['MRE_mm'])[:2]
    assert [w['patient_id'] for w in worst] == [e['patient_id'] for e in ranked]

    classes = metrics['skeletal_class']
    for key in ('predicted_vs_true_landmarks', 'predicted_vs_recorded'):
        matrix = np.array(classes[key]['confusion'])
        assert matrix.shape == (3, 3) and matrix.sum() == len(ids) == classes[key]['n']
        assert classes[key]['accuracy'] == pytest.approx(np.trace(matrix) / len(ids))
    for key in ('SNA', 'SNB', 'ANB'):
        assert metrics['measurements'][key]['unit'] == 'deg'
        assert metrics['measurements'][key]['n'] == len(ids)
    assert 'MRE_mm' in metrics['baseline_mean_shape']


# -- helpers on hand-made inputs -------------------------------------------------------------

def test_class_agreement_by_hand():
    truth = [1, 1, 2, 3, None, 2, 4]
    predicted = [1, 2, 2, 1, 3, None, 1]     # pairs with None or an unknown class (4) are left out
    result = numbers.class_agreement(truth, predicted)
    assert result['n'] == 4
    assert result['accuracy'] == pytest.approx(0.5)
    # Row = true class, column = predicted.
    assert result['confusion'] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert result['labels'] == ['Class I', 'Class II', 'Class III']
    assert numbers.class_agreement([None], [1]) == {
        'n': 0, 'accuracy': None, 'labels': ['Class I', 'Class II', 'Class III'],
        'confusion': [[0, 0, 0]] * 3}
    with pytest.raises(ValueError):
        numbers.confusion_matrix([1, 2], [1])


def test_error_values_percentiles_and_measurement_errors_by_hand():
    errors = np.array([[1.0, 2.0], [3.0, 4.0]])
    visible = np.array([[True, True], [True, False]])
    values, unit = numbers.error_values(errors, visible, np.array([0.5, np.nan]))
    assert unit == 'mm' and values.tolist() == [0.5, 1.0]
    values, unit = numbers.error_values(errors, visible, np.array([np.nan, np.nan]))
    assert unit == 'px' and sorted(values.tolist()) == [1.0, 2.0, 3.0]

    assert numbers.error_percentiles(np.arange(1, 102)) == {'p50': 51.0, 'p90': 91.0,
                                                            'p95': 96.0, 'max': 101.0}

    truth = [{'SNA': 80.0, 'ANB': 2.0, 'skeletal_class': 1}, {'SNA': 82.0}]
    predicted = [{'SNA': 81.0, 'ANB': 5.0, 'skeletal_class': 2}, {'SNA': 80.0, 'ANB': 1.0}]
    result = numbers.measurement_errors(truth, predicted)
    assert list(result) == ['SNA', 'ANB']          # class compared elsewhere; order of MEASUREMENTS
    assert result['SNA'] == {'unit': 'deg', 'n': 2, 'MAE': 1.5, 'mean_error': -0.5,
                             'max_abs_error': 2.0}
    assert result['ANB']['n'] == 1 and result['ANB']['MAE'] == 3.0


# -- in-process runs: split choice, --overwrite, failures ------------------------------------

class FakePredictor:
    """Stands in for the network: these tests are about the output folder, not the model, and
    skipping MMPose keeps them fast. Predicts the same fan of points on every image."""

    def __init__(self, checkpoint, device='auto', **_):
        self.names, self.device = list(STANDARD_LANDMARKS), 'cpu'

    def predict(self, images, bbox='full', batch_size=8):
        fan = np.linspace([0.3, 0.2], [0.7, 0.8], len(self.names))
        return [SimpleNamespace(keypoints=fan * [i.shape[1], i.shape[0]]) for i in images]


@pytest.fixture
def cli(monkeypatch):
    import evaluate
    monkeypatch.setattr('cephalometric.prediction.predictor.LandmarkPredictor', FakePredictor)
    return evaluate


def test_train_split_only_when_asked(cli, checkpoint, spaced_data, evaluation, tmp_path):
    train = load_split(str(spaced_data), 'train')
    test_ids, _ = read_predictions(evaluation / 'predictions.csv', train.names)
    assert not set(test_ids) & set(train.patient_ids)   # the default run predicted test only

    out = tmp_path / 'train_eval'
    cli.main(['--checkpoint', str(checkpoint), '--data-root', str(spaced_data), '--split', 'train',
              '--out-dir', str(out), '--device', 'cpu', '--worst', '0'])
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['split'] == 'train' and metrics['unit'] == 'px'
    assert read_predictions(out / 'predictions.csv', train.names)[0] == train.patient_ids
    text = (out / 'report.md').read_text()
    assert '# Landmark evaluation: train split' in text and 'optimistic' in text
    assert not (out / 'worst_cases.png').exists() and '--worst 0' in text


def test_overwrite_replaces_only_when_asked_and_a_failure_leaves_the_old_folder(
        cli, checkpoint, spaced_data, tmp_path, monkeypatch):
    out = tmp_path / 'eval'
    out.mkdir()
    (out / 'mine.txt').write_text('keep me')
    args = ['--checkpoint', str(checkpoint), '--data-root', str(spaced_data), '--out-dir', str(out),
            '--device', 'cpu', '--worst', '1']
    with pytest.raises(UserError, match='already exists; pass --overwrite'):
        cli.main(args)
    # A folder this project did not write is never replaced, --overwrite or not.
    with pytest.raises(UserError, match='not written by this project'):
        cli.main(args + ['--overwrite'])
    assert os.listdir(out) == ['mine.txt']
    shutil.rmtree(out)

    cli.main(args)                                  # now a folder of ours
    before = sorted(os.listdir(out))

    def broken(*_, **__):
        raise RuntimeError('disk gone')
    with monkeypatch.context() as patch:    # fails after the staging folder is half written
        patch.setattr(report, 'plot_error_cdf', broken)
        with pytest.raises(RuntimeError):
            cli.main(args + ['--overwrite'])
    assert sorted(os.listdir(out)) == before
    assert os.listdir(tmp_path) == ['eval']        # no staging folder left behind

    cli.main(args + ['--overwrite'])
    assert (out / 'metrics.json').is_file() and sorted(os.listdir(out)) == before
    assert os.listdir(tmp_path) == ['eval']


def test_failure_on_a_new_folder_leaves_no_folder(cli, checkpoint, spaced_data, tmp_path,
                                                  monkeypatch):
    monkeypatch.setattr(report, 'tile_images', lambda *_, **__: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(['--checkpoint', str(checkpoint), '--data-root', str(spaced_data),
                  '--out-dir', str(tmp_path / 'new'), '--device', 'cpu'])
    assert os.listdir(tmp_path) == []


# -- user errors: exit 2, one line, nothing written -----------------------------------------

def test_user_errors_are_one_line(checkpoint, spaced_data, tmp_path):
    empty = tmp_path / 'empty'
    shutil.copytree(spaced_data / 'annotations', empty / 'annotations')
    coco = json.loads((empty / 'annotations' / 'test.json').read_text())
    coco['images'], coco['annotations'] = [], []
    (empty / 'annotations' / 'test.json').write_text(json.dumps(coco))
    taken = tmp_path / 'taken'
    taken.mkdir()
    out = tmp_path / 'out'
    cases = [
        (['--split', 'validation'], ['--split must be one of train, val, test']),
        (['--checkpoint', tmp_path / 'nope.pth'], ['checkpoint not found', 'nope.pth']),
        (['--data-root', tmp_path / 'nodata'],
         ['no test split at', 'prepare_cephalometric_data.py']),
        (['--data-root', empty], ['test split', 'has no images']),
        (['--out-dir', taken], ['already exists', '--overwrite']),
        (['--class-thresholds', '4,0'], ['--class-thresholds must be LOW,HIGH']),
    ]
    for extra, fragments in cases:
        args = {'--checkpoint': checkpoint, '--data-root': spaced_data, '--out-dir': out}
        args.update(dict(zip(extra[::2], extra[1::2])))
        result = run_script('evaluate.py', *[str(v) for pair in args.items() for v in pair],
                            '--device', 'cpu', check=False)
        assert_one_line_error(result, *fragments)
        assert not out.exists()
    assert os.listdir(taken) == []
