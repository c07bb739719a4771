"""The review app as a clinic uses it, through the HTTP API and the command line (no browser):
one rounding, case status, not-visible landmarks, calibration, reviewer / date / model version,
background prediction, large photos, the report, estimated points, and the safety refusals
(Origin / Referer / Host, hostile JSON bodies and records, NaN predictions, --export-table onto
its own inputs). A stand-in predictor (the demo truth plus a known error) replaces the model.
"""
import json
import os
import re
import threading
import time
import zlib

import cv2
import numpy as np
import pandas as pd
import pytest

import review_app
from cephalometric.data.demo import make_demo_dataframe
from cephalometric.errors import UserError, run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS, estimated_landmarks
from cephalometric.measurements import CLASS_NAMES, compute_measurements
from cephalometric.prediction.predictor import Prediction
from cephalometric.review.clinical import (
    ISBI_LANDMARKS,
    definition,
    landmark_help,
    mark,
    norm_mean_sd,
    table_rows,
)
from cephalometric.review.server import running_server
from cephalometric.review.store import ReviewStore, round_points
from tests.helpers import call

NUM_IMAGES = 3
B_POINT = 3


class StandIn:
    """Demo truth moved by a fixed error; optionally waits for `gate` before each batch, or
    predicts NaN for some landmarks."""

    names = list(STANDARD_LANDMARKS)

    def __init__(self, truth, gate=None, nan_landmarks=()):
        self.truth, self.gate, self.nan = truth, gate, list(nan_landmarks)
        self.seen = []

    def predict(self, images):
        if self.gate is not None:
            assert self.gate.wait(30)
        out = []
        for image in images:
            self.seen.append(image.tobytes()[:4096])
            truth = self.truth[image.tobytes()[:4096]].copy() + [2.0, -1.5]
            truth[self.nan] = np.nan
            scores = np.linspace(0.9, 0.5, len(truth))
            out.append(Prediction(self.names, truth, scores, (0, 0, image.shape[1],
                                                              image.shape[0])))
        return out


def write_photos(folder, count=NUM_IMAGES, seed=5):
    folder.mkdir(parents=True, exist_ok=True)
    frame = make_demo_dataframe(count, seed=seed)
    columns = [c[:-2] for c in frame.columns if c.endswith('_x')]
    truth = {}
    for _, row in frame.iterrows():
        rgb = np.asarray(row['Image'], np.uint8).reshape(224, 224, 3)
        path = folder / f'{row["patient_id"]}.png'
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        truth[back.tobytes()[:4096]] = np.array([[row[f'{n}_x'], row[f'{n}_y']] for n in columns])
    return truth


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('clinic') / 'photos'
    return folder, write_photos(folder)


@pytest.fixture
def served(photos, tmp_path):
    folder, truth = photos
    store = ReviewStore(str(folder), str(tmp_path / 'reviewed'), StandIn(truth),
                        log=lambda text: None, model={'file': 'best_MRE.pth', 'sha256': 'ab' * 32})
    with running_server(store) as url:
        yield url, store, tmp_path / 'reviewed'


def pdf_text(data: bytes) -> str:
    """The text drawn on a matplotlib PDF (its content streams, TJ strings joined)."""
    text = []
    for match in re.finditer(rb'stream\r?\n(.*?)\r?\nendstream', data, re.S):
        try:
            stream = zlib.decompress(match.group(1))
        except zlib.error:
            continue
        for array in re.findall(rb'\[(.*?)\]\s*TJ', stream, re.S):
            text.append(b''.join(re.findall(rb'\(((?:\\.|[^\\)])*)\)', array)).decode('latin-1'))
    return '\n'.join(text)


def pdf_pages(data: bytes) -> int:
    return len(re.findall(rb'/Type\s*/Page\b(?!s)', data))


def anb_boundary_points(store, name):
    """Points on the 0.01 px grid whose ANB lies just below 4 (3.9990..3.99999): the class then
    hangs on the last digits (Class I, although ANB shows as 4.00)."""
    points = np.array(store.detail(name)['points'], float)
    names = STANDARD_LANDMARKS
    b_index = B_POINT
    for _ in range(60):   # move B point until ANB is close to 4, then search the grid near it
        anb = compute_measurements(names, points)['ANB']
        if abs(anb - 4) < 0.05:
            break
        points[b_index, 0] += 0.5 if anb > 4 else -0.5
        points = round_points(points)
    # Every B point on the 0.01 px grid near there at once (ANB = angle S-N-A - angle S-N-B),
    # then the first with ANB in (3.999, 4) is confirmed with compute_measurements.
    s, n, a = points[0], points[1], points[2]

    def angle(p, q):
        u, v = p - n, q - n
        cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))
    offsets = np.stack(np.meshgrid(np.arange(-300, 301), np.arange(-30, 31)), -1).reshape(-1, 2)
    candidates = np.round(points[b_index] + offsets * 0.01, 2)
    anbs = angle(s, a) - angle(s, candidates)
    for index in np.flatnonzero((anbs > 3.9991) & (anbs < 3.9999)):
        candidate = points.copy()
        candidate[b_index] = candidates[index]
        anb = compute_measurements(names, candidate)['ANB']
        if 3.999 < anb < 4.0:
            return candidate, anb
    raise AssertionError('no grid point with ANB just below 4')


# ---- one truth -----------------------------------------------------------------------------------
def test_one_rounding_page_and_file_agree_at_the_class_boundary(served, photos):
    url, store, out_dir = served
    name = 'demo_0001.png'
    points, anb = anb_boundary_points(store, name)
    assert compute_measurements(STANDARD_LANDMARKS, points)['skeletal_class'] == 1
    # Sent with noise below the rounding: the server rounds once, then computes.
    noisy = points + np.random.default_rng(0).uniform(-0.004, 0.004, points.shape)
    status, shown = call(url, '/api/measurements', {'image': name, 'landmarks': noisy.tolist()})
    assert status == 200
    assert shown['measurements']['ANB'] == 4.0 and shown['measurements']['skeletal_class'] == 1
    status, saved = call(url, f'/api/save/{name}', {'landmarks': noisy.tolist()})
    record = json.loads((out_dir / 'demo_0001.json').read_text())
    assert record['measurements'] == shown['measurements'] == saved['detail']['measurements']
    assert record['measurements']['skeletal_class'] == 1
    # Reopened from the file: the same numbers again, to the digit.
    again = ReviewStore(store.images_dir, store.out_dir, StandIn(photos[1]), log=lambda text: None)
    assert again.detail(name)['measurements'] == record['measurements']
    assert [[lm['x'], lm['y']] for lm in record['landmarks']] == again.detail(name)['points']


# ---- case workflow -------------------------------------------------------------------------------
def test_not_visible_is_saved_missing_left_out_of_measurements_and_export(served, photos, tmp_path):
    url, store, out_dir = served
    folder, _ = photos
    name = 'demo_0002.png'
    points = store.detail(name)['points']
    points[B_POINT] = None
    status, shown = call(url, '/api/measurements', {'image': name, 'landmarks': points})
    assert status == 200 and 'ANB' not in shown['measurements'] and 'SNB' not in \
        shown['measurements'] and 'SN_GoMe' in shown['measurements']
    status, answer = call(url, f'/api/save/{name}', {'landmarks': points, 'reviewer': 'jd'})
    assert status == 200, answer
    record = json.loads((out_dir / 'demo_0002.json').read_text())
    b_point = record['landmarks'][B_POINT]
    assert b_point['x'] is None and b_point['y'] is None and b_point['visible'] is False
    assert b_point['corrected'] is False and 'ANB' not in record['measurements']
    assert answer['detail']['points'][B_POINT] is None
    # Cannot trace: needs a reason, is saved with it, and stays out of the training table.
    status, refused = call(url, '/api/save/demo_0003.png', {'status': 'cannot trace',
                                                            'landmarks': None})
    assert status == 422
    detail = store.detail('demo_0003.png')
    status, answer = call(url, '/api/save/demo_0003.png', {
        'status': 'cannot trace', 'reason': 'face cut off', 'landmarks': detail['points'],
        'reviewer': 'JD'})
    assert status == 200, answer
    record = json.loads((out_dir / 'demo_0003.json').read_text())
    assert record['review']['status'] == 'cannot trace'
    assert record['review']['reason'] == 'face cut off' and record['measurements'] == {}
    assert answer['detail']['measurements'] == {}            # the page shows what the file has
    listing = {item['name']: item['status'] for item in answer['images']}
    assert listing == {'demo_0001.png': 'to review', 'demo_0002.png': 'reviewed',
                       'demo_0003.png': 'cannot trace'}
    table = tmp_path / 'table.pkl'
    assert run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                     '--export-table', str(table)]) == 0
    frame = pd.read_pickle(table)
    assert list(frame['patient_id']) == ['demo_0002']
    assert np.isnan(frame.loc[0, 'B point_x']) and np.isnan(frame.loc[0, 'B point_y'])
    assert frame.loc[0, 'A point_x'] == record_points(out_dir / 'demo_0002.json')[2][0]


def record_points(path):
    return [[lm['x'], lm['y']] for lm in json.loads(path.read_text())['landmarks']]


def test_reviewer_date_and_model_version_in_every_record(served):
    url, store, out_dir = served
    name = 'demo_0001.png'
    points = store.detail(name)['points']
    for initials in ('John Smith', 'Mr. X', '12', 'ABCDE', ''):
        status, answer = call(url, f'/api/save/{name}', {'landmarks': points,
                                                         'reviewer': initials})
        assert status == 422 and 'initials' in answer['error'], initials
    assert not out_dir.exists()
    status, answer = call(url, f'/api/save/{name}', {'landmarks': points, 'reviewer': 'ab'})
    review = json.loads((out_dir / 'demo_0001.json').read_text())['review']
    assert review['reviewer'] == 'AB' and review['status'] == 'reviewed'
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', review['date'])
    assert review['model'] == {'file': 'best_MRE.pth', 'sha256': 'ab' * 32}


def test_model_version_is_the_checkpoint_hash(tmp_path):
    import hashlib

    from cephalometric.review.store import model_version
    checkpoint = tmp_path / 'best_MRE.pth'
    checkpoint.write_bytes(b'weights' * 1000)
    assert model_version(str(checkpoint)) == {
        'file': 'best_MRE.pth', 'sha256': hashlib.sha256(b'weights' * 1000).hexdigest()}


def test_calibration_per_photo_gives_mm_and_goes_to_the_export(served, photos, tmp_path):
    url, store, out_dir = served
    folder, _ = photos
    name = 'demo_0001.png'
    points = store.detail(name)['points']
    calibration = {'points': [[20, 30], [20, 130]], 'length_mm': 25}   # 100 px = 25 mm
    status, shown = call(url, '/api/measurements', {'image': name, 'landmarks': points,
                                                    'calibration': calibration})
    assert status == 200 and shown['mm_per_pixel'] == 0.25
    values = shown['measurements']
    assert values['U1_NA_mm'] == pytest.approx(values['U1_NA_px'] * 0.25, abs=0.01)
    assert values['upper_lip_E_line_mm'] == pytest.approx(values['upper_lip_E_line_px'] * 0.25,
                                                          abs=0.01)
    for bad in ({'points': [[20, 30], [20, 30.5]], 'length_mm': 25},
                {'points': [[20, 30], [20, 130]], 'length_mm': 0},
                {'points': [[20, 30], [20, 1300]], 'length_mm': 5}, {'points': 3}):
        status, answer = call(url, '/api/measurements', {'image': name, 'landmarks': points,
                                                         'calibration': bad})
        assert status == 422 and 'calibration' in answer['error'], bad
    status, _ = call(url, f'/api/save/{name}', {'landmarks': points, 'calibration': calibration})
    record = json.loads((out_dir / 'demo_0001.json').read_text())
    assert record['calibration']['mm_per_pixel'] == 0.25
    assert record['measurements']['U1_NA_mm'] == values['U1_NA_mm']
    assert store.detail('demo_0002.png')['mm_per_pixel'] is None     # per photo, not for all
    table = tmp_path / 'table.pkl'
    assert run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                     '--export-table', str(table)]) == 0
    assert pd.read_pickle(table).loc[0, 'mm per pixel'] == 0.25


# ---- start at once -------------------------------------------------------------------------------
def test_background_prediction_opens_at_once_and_predicts_each_image_once(photos, tmp_path):
    folder, truth = photos
    gate = threading.Event()
    predictor = StandIn(truth, gate=gate)
    store = ReviewStore(str(folder), str(tmp_path / 'r'), predictor, log=lambda text: None,
                        background=True, batch_size=1)
    with running_server(store) as url:
        status, session = call(url, '/api/session')
        assert status == 200 and session['progress'] == {'done': 0, 'total': 3, 'failure': None}
        assert {item['status'] for item in session['images']} == {'predicting'}
        status, answer = call(url, '/api/image/demo_0001.png')
        assert status == 409 and 'still being predicted' in answer['error']
        gate.set()
        deadline = time.monotonic() + 30
        while call(url, '/api/images')[1]['progress']['done'] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert call(url, '/api/image/demo_0001.png')[0] == 200
    assert len(predictor.seen) == 3 and len(set(predictor.seen)) == 3


def test_nan_predictions_give_flagged_landmarks_not_an_error(photos, tmp_path):
    folder, truth = photos
    store = ReviewStore(str(folder), str(tmp_path / 'r'), StandIn(truth, nan_landmarks=[3, 7]),
                        log=lambda text: None)
    with running_server(store) as url:
        status, detail = call(url, '/api/image/demo_0001.png')
        assert status == 200 and detail['flagged'] == [3, 7]
        assert detail['scores'][3] == 0 and detail['scores'][7] == 0
        assert all(v is not None for p in detail['points'] for v in p)
        assert call(url, '/api/session')[0] == 200
        status, _ = call(url, '/api/save/demo_0001.png', {'landmarks': detail['points']})
        assert status == 200


# ---- large photos --------------------------------------------------------------------------------
def test_large_photos_are_sent_scaled_down_with_coordinates_in_original_pixels(tmp_path):
    folder = tmp_path / 'big'
    folder.mkdir()
    big = np.zeros((4000, 6000, 3), np.uint8)
    big[::50] = 255
    cv2.imwrite(str(folder / 'camera.jpg'), big)

    class Big:
        names = list(STANDARD_LANDMARKS)

        def predict(self, images):
            return [Prediction(self.names, np.tile([[3000.0, 2000.0]], (19, 1)), np.ones(19),
                               (0, 0, 6000, 4000)) for _ in images]

    store = ReviewStore(str(folder), str(tmp_path / 'r'), Big(), log=lambda text: None)
    with running_server(store) as url:
        status, detail = call(url, '/api/image/camera.jpg')
        assert detail['size'] == [6000, 4000] and detail['points'][0] == [3000.0, 2000.0]
        status, small = call(url, '/api/pixels/camera.jpg?max=1600')
        decoded = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
        assert status == 200 and decoded.shape[:2] == (1067, 1600)
        assert len(small) < 1_500_000
        assert call(url, '/api/pixels/camera.jpg?max=abc')[0] == 422


# ---- clinical table, estimates, help -------------------------------------------------------------
def test_clinical_table_has_names_full_norms_and_marks_beyond_one_and_two_sd():
    assert norm_mean_sd('SN_GoMe') == (32.0, 5.0)
    assert norm_mean_sd('upper_lip_E_line_mm') == (-4.0, 2.0)
    assert norm_mean_sd('jarabak_ratio') == (63.5, 1.5)
    assert norm_mean_sd('U1_NA') is None and norm_mean_sd('U1_NA_px') is None
    assert mark('SN_GoMe', 54) == 2 and mark('SN_GoMe', 38) == 1 and mark('SN_GoMe', 33) == 0
    assert mark('SN_GoMe', 26) == -1 and mark('SN_GoMe', 20) == -2
    assert mark('skeletal_class', 2) == 1 and mark('skeletal_class', 1) == 0
    rows = {row['key']: row for row in table_rows({'SN_GoMe': 54.0, 'ANB': 2.5,
                                                   'skeletal_class': 1})}
    assert rows['SN_GoMe']['name'] == 'Mandibular plane to SN'
    assert rows['SN_GoMe']['norm'] == '32 +/- 5' and rows['SN_GoMe']['sign'] == '++'
    assert rows['ANB']['sign'] == '' and rows['skeletal_class']['text'] == 'Class I'


def test_every_landmark_of_both_sets_has_a_definition_and_the_skeletal_ones_are_estimates():
    for names in (STANDARD_LANDMARKS, ISBI_LANDMARKS):
        assert all(definition(name) for name in names), names
    help_rows = {row['name']: row['estimated'] for row in landmark_help(STANDARD_LANDMARKS)}
    for name in ('sella', 'PNS', 'Gonion', 'upper 1 apex', 'lower 1 apex', 'A point', 'B point'):
        assert help_rows[name], name
    for name in ('ST Nasion', 'Tip of the nose', 'Subnasal', 'Upper lip', 'Lower lip',
                 'ST Pogonion'):
        assert not help_rows[name], name
    assert estimated_landmarks(['x', 'y'], estimated=['y']) == [False, True]


def test_inference_picture_draws_estimates_as_diamonds_with_a_legend():
    from cephalometric.drawing import ESTIMATE_LEGEND, draw_landmarks
    image = np.full((224, 224, 3), 90, np.uint8)
    coords = np.array([[20 + 10 * i, 30 + 8 * i] for i in range(19)], float)
    plain = draw_landmarks(image, STANDARD_LANDMARKS, coords, estimated=[False] * 19)
    marked = draw_landmarks(image, STANDARD_LANDMARKS, coords)
    assert ESTIMATE_LEGEND.startswith('diamond')
    canvas = slice(0, 896)
    # A diamond reaches further along the axes than the circle of the same point.
    x, y = (np.array(coords[0]) + 0.5) * 4 - 0.5
    tip = (int(round(y)) - 9, int(round(x)))
    assert not np.array_equal(marked[tip], plain[tip])
    assert marked.shape[0] >= plain.shape[0]
    # The soft-tissue points are drawn the same way in both.
    x, y = (np.array(coords[13]) + 0.5) * 4 - 0.5
    box = (slice(int(y) - 12, int(y) + 12), slice(int(x) - 12, int(x) + 12))
    assert np.array_equal(marked[canvas][box], plain[canvas][box])


# ---- the report ----------------------------------------------------------------------------------
def test_report_has_one_page_with_class_reviewer_and_model_and_no_patient_name(served, photos,
                                                                                tmp_path,
                                                                                capsys):
    url, store, out_dir = served
    folder, _ = photos
    name = 'demo_0001.png'
    assert call(url, f'/api/report/{name}')[0] == 409          # nothing saved yet
    points = store.detail(name)['points']
    status, answer = call(url, f'/api/save/{name}', {'landmarks': points, 'reviewer': 'KL'})
    cls = answer['record']['measurements']['skeletal_class']
    status, pdf = call(url, f'/api/report/{name}?format=pdf')
    assert status == 200 and pdf.startswith(b'%PDF') and pdf_pages(pdf) == 1
    text = pdf_text(pdf)
    assert f'Skeletal {CLASS_NAMES[cls]}  ' in text
    assert 'Reviewer: KL' in text and 'best_MRE.pth' in text and 'demo_0001' in text
    status, png = call(url, f'/api/report/{name}?format=png')
    assert status == 200 and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) \
        .shape[:2] == (1753, 1240)
    # From the command line: a PDF and a PNG per saved review, all or nothing.
    reports = tmp_path / 'reports'
    assert run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                     '--report', str(reports)]) == 0
    assert sorted(os.listdir(reports)) == ['demo_0001_report.pdf', 'demo_0001_report.png']
    assert pdf_pages((reports / 'demo_0001_report.pdf').read_bytes()) == 1
    capsys.readouterr()
    assert run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                     '--report', str(tmp_path / 'r2'), '--only', 'nobody']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: no saved review for nobody') and err.count('\n') == 1
    assert not (tmp_path / 'r2').exists()


# ---- safety: the server --------------------------------------------------------------------------
def test_requests_from_another_site_are_refused_with_the_json_error(served):
    url, store, out_dir = served
    own = url.rstrip('/')
    body = {'landmarks': store.detail('demo_0001.png')['points']}
    for headers in ({'Origin': 'http://evil.example'}, {'Origin': 'null'},
                    {'Referer': 'http://evil.example/page'},
                    {'Origin': own.replace('127.0.0.1', 'localhost')},
                    {'Origin': own.rsplit(':', 1)[0] + ':1'}):
        status, answer = call(url, '/api/save/demo_0001.png', body, headers=headers)
        assert status == 403 and 'another web site' in answer['error'], headers
        assert call(url, '/api/session', headers=headers)[0] == 403
    assert not out_dir.exists()
    status, answer = call(url, '/api/session', headers={'Host': 'attacker.example'})
    assert status == 400 and 'Host' in answer['error']
    status, _ = call(url, '/api/save/demo_0001.png', body,
                     headers={'Origin': own, 'Referer': own + '/'})
    assert status == 200


HOSTILE_BODIES = [
    ('400-digit integer', lambda p: json.dumps({'image': 'demo_0001.png', 'landmarks': p}).replace(
        json.dumps(p[0][0]), '1' * 400, 1), 400, 'digits'),
    ('20000 deep', lambda p: '[' * 20000 + ']' * 20000, 400, 'nested'),
    ('100000 deep', lambda p: '{"a":' * 10000 + '1' + '}' * 10000, 400, 'nested'),
    ('missing keys', lambda p: '{}', 422, 'must be'),
    ('landmarks missing', lambda p: '{"image": "demo_0001.png"}', 422, 'landmarks'),
    ('huge float', lambda p: json.dumps({'image': 'demo_0001.png', 'landmarks': p}).replace(
        json.dumps(p[0][0]), '9' * 300 + '.5', 1), 422, 'outside'),
]


@pytest.mark.parametrize('label, build, status, words', HOSTILE_BODIES,
                         ids=[case[0] for case in HOSTILE_BODIES])
def test_hostile_json_bodies_get_a_json_4xx(served, label, build, status, words):
    url, store, _ = served
    raw = build(store.detail('demo_0001.png')['points']).encode()
    for path in ('/api/measurements', '/api/save/demo_0001.png'):
        code, answer = call(url, path, raw=raw)
        assert code == status and words in answer['error'], (path, answer)
    assert call(url, '/api/images')[0] == 200


# ---- safety: records and --export-table ----------------------------------------------------------
def good_record(store):
    return store.record(store.case('demo_0001.png'))


@pytest.mark.parametrize('spoil', ['huge int', 'deep', 'infinite size', 'no size', 'no predicted',
                                   'text size', 'bad status', 'size zero'])
def test_hostile_records_are_refused_in_one_line(served, photos, tmp_path, capsys, spoil):
    url, store, _ = served
    folder, truth = photos
    record = good_record(store)
    text = json.dumps(record)
    if spoil == 'huge int':
        text = text.replace('"size": [224, 224]', '"size": [' + '7' * 400 + ', 224]')
    elif spoil == 'deep':
        text = text[:-1] + ', "x": ' + '[' * 30000 + ']' * 30000 + '}'
    elif spoil == 'infinite size':
        text = text.replace('"size": [224, 224]', '"size": [Infinity, 224]')
    elif spoil == 'no size':
        del record['size']
        text = json.dumps(record)
    elif spoil == 'no predicted':
        del record['landmarks'][4]['predicted']
        text = json.dumps(record)
    elif spoil == 'text size':
        text = text.replace('"size": [224, 224]', '"size": ["224", 224]')
    elif spoil == 'bad status':
        record['review']['status'] = 'approved'
        text = json.dumps(record)
    elif spoil == 'size zero':
        text = text.replace('"size": [224, 224]', '"size": [0, 224]')
    out_dir = tmp_path / 'reviewed'
    out_dir.mkdir()
    (out_dir / 'demo_0001.json').write_text(text)
    with pytest.raises(UserError, match='not a record written by review_app.py'):
        ReviewStore(str(folder), str(out_dir), StandIn(truth), log=lambda text: None)
    assert run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                     '--export-table', str(tmp_path / 't.pkl')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err
    assert not (tmp_path / 't.pkl').exists()


def test_export_table_refuses_its_own_inputs_and_unwritable_places(served, photos, tmp_path,
                                                                  capsys):
    url, store, out_dir = served
    folder, _ = photos
    call(url, '/api/save/demo_0001.png', {'landmarks': store.detail('demo_0001.png')['points']})
    record = out_dir / 'demo_0001.json'
    before = {p: p.read_bytes() for p in [record, *folder.iterdir()]}
    a_file = tmp_path / 'a_file'
    a_file.write_text('mine')
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    cases = [(folder / 'demo_0002.png', 'photographs or reviewed records'),
             (record, 'photographs or reviewed records'),
             (tmp_path, 'is a folder'), (folder, 'is a folder'),
             (a_file / 'table.pkl', 'which is a file'),
             (a_file / 'deeper' / 'table.pkl', 'which is a file'),
             (locked / 'table.pkl', 'read-only' if os.getuid() == 0 else 'cannot write')]
    try:
        for target, words in cases:
            code = run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                             '--export-table', str(target)])
            err = capsys.readouterr().err
            assert code == 2 and err.startswith('error: ') and words in err, (target, err)
            assert err.count('\n') == 1 and ';' in err
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)
    assert {p: p.read_bytes() for p in before} == before
    assert a_file.read_text() == 'mine'
    assert sorted(os.listdir(out_dir)) == ['demo_0001.json']


def test_report_refuses_to_write_over_its_inputs_or_under_a_file(served, photos, tmp_path, capsys):
    import shutil
    url, store, out_dir = served
    folder, _ = photos
    call(url, '/api/save/demo_0001.png', {'landmarks': store.detail('demo_0001.png')['points']})
    images = tmp_path / 'images'
    shutil.copytree(folder, images)
    shutil.copy(images / 'demo_0002.png', images / 'demo_0001_report.png')   # a photo's name
    before = (images / 'demo_0001_report.png').read_bytes()
    a_file = tmp_path / 'a_file'
    a_file.write_text('mine')
    for target, words in ((images, 'over one of the photographs'),
                          (a_file, 'is a file'), (a_file / 'reports', 'under the file')):
        code = run_cli(review_app.main, ['--images', str(images), '--out-dir', str(out_dir),
                                         '--report', str(target)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith('error: ') and words in err, (target, err)
        assert err.count('\n') == 1
    assert (images / 'demo_0001_report.png').read_bytes() == before
    assert not (images / 'demo_0001_report.pdf').exists() and a_file.read_text() == 'mine'


@pytest.mark.parametrize('spoil', ['measurement text', 'class 7', 'reviewer number',
                                   'model text', 'landmark not an object'])
def test_report_refuses_a_spoiled_record_in_one_line(served, photos, tmp_path, capsys, spoil):
    url, store, _ = served
    folder, _ = photos
    record = good_record(store)
    record['review']['model'] = {'file': 'm.pth', 'sha256': 'ab'}
    if spoil == 'measurement text':
        record['measurements']['SNA'] = 'eighty'
    elif spoil == 'class 7':
        record['measurements']['skeletal_class'] = 7
    elif spoil == 'reviewer number':
        record['review']['reviewer'] = 12
    elif spoil == 'model text':
        record['review']['model'] = 'best'
    else:
        record['landmarks'][0] = 'sella'
    reviewed = tmp_path / 'reviewed'
    reviewed.mkdir()
    (reviewed / 'demo_0001.json').write_text(json.dumps(record))
    code = run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(reviewed),
                                     '--report', str(tmp_path / 'reports')])
    err = capsys.readouterr().err
    assert code == 2 and 'not a record written by review_app.py' in err and err.count('\n') == 1
    assert not (tmp_path / 'reports').exists()


def test_cross_site_fetch_metadata_is_refused(served):
    url, _, _ = served
    status, answer = call(url, '/api/session', headers={'Sec-Fetch-Site': 'cross-site'})
    assert status == 403 and 'another web site' in answer['error']
    assert call(url, '/api/session', headers={'Sec-Fetch-Site': 'same-origin'})[0] == 200


def test_the_prediction_shown_and_recomputed_are_the_same_numbers(served):
    """Undoing back to the prediction gives the numbers the page opened with (no SNA drift)."""
    url, store, _ = served
    for name in store.cases:
        detail = store.detail(name)
        status, again = call(url, '/api/measurements', {'image': name,
                                                        'landmarks': detail['predicted']})
        assert status == 200 and again['measurements'] == detail['measurements']
        assert detail['points'] == detail['predicted']
        assert all(round(v, 2) == v for p in detail['points'] for v in p)


def test_cli_serves_at_once_with_the_checkpoint_hash_as_model_version(photos, tmp_path,
                                                                      monkeypatch):
    """review_app.py wiring: predictions in the background, the model version from the file."""
    import cephalometric.prediction.predictor as predictor_module
    import cephalometric.review.server as server_module
    from cephalometric.review.store import model_version
    folder, truth = photos
    checkpoint = tmp_path / 'model.onnx'
    checkpoint.write_bytes(b'not a real model')
    gate = threading.Event()
    monkeypatch.setattr(predictor_module, 'LandmarkPredictor',
                        lambda path, device=None, refine=True: StandIn(truth, gate=gate))
    served = {}

    def fake_serve(store, host, port):
        served.update(store=store, host=host, done=store.progress()['done'])
    monkeypatch.setattr(server_module, 'serve', fake_serve)
    assert run_cli(review_app.main, ['--checkpoint', str(checkpoint), '--images', str(folder),
                                     '--out-dir', str(tmp_path / 'r'), '--port', '0']) == 0
    store = served['store']
    assert served['host'] == '127.0.0.1' and served['done'] == 0     # served before predicting
    assert store.model == model_version(str(checkpoint))
    gate.set()
    store.thread.join(30)
    assert store.progress() == {'done': NUM_IMAGES, 'total': NUM_IMAGES, 'failure': None}


def test_a_set_can_say_which_points_are_estimates(photos, tmp_path):
    """X-rays show every point: --estimated none (here the store's option) marks none."""
    folder, truth = photos
    for estimated, expected in ((None, estimated_landmarks(STANDARD_LANDMARKS)),
                                ([], [False] * 19), (['Gonion'], [i == 10 for i in range(19)])):
        store = ReviewStore(str(folder), str(tmp_path / 'r'), StandIn(truth),
                            log=lambda text: None, estimated=estimated)
        assert store.session()['estimated'] == expected
        assert [row['estimated'] for row in store.session()['help']] == expected
        record = store.record(store.case('demo_0001.png'))
        assert [lm['estimated'] for lm in record['landmarks']] == expected


def test_cli_estimated_names_are_checked(photos, tmp_path, monkeypatch, capsys):
    import cephalometric.prediction.predictor as predictor_module
    import cephalometric.review.server as server_module
    folder, truth = photos
    checkpoint = tmp_path / 'model.onnx'
    checkpoint.write_bytes(b'not a real model')
    monkeypatch.setattr(predictor_module, 'LandmarkPredictor',
                        lambda path, device=None, refine=True: StandIn(truth))
    served = {}
    monkeypatch.setattr(server_module, 'serve',
                        lambda store, host, port: served.update(store=store))
    base = ['--checkpoint', str(checkpoint), '--images', str(folder), '--out-dir',
            str(tmp_path / 'r')]
    assert run_cli(review_app.main, base + ['--estimated', 'go, s']) == 0
    assert served['store'].estimated_names == ['Gonion', 'sella']
    assert run_cli(review_app.main, base + ['--estimated', 'none']) == 0
    assert not any(served['store'].estimated)
    assert run_cli(review_app.main, base + ['--estimated', 'tragus']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --estimated names tragus') and err.count('\n') == 1


def test_a_photo_whose_framing_failed_comes_first_with_every_point_to_check(photos, tmp_path):
    """Framing that found no reliable face (here: the face check failed) reaches the review list:
    that photo is listed first, every point is marked unsure, and the page is told why."""
    folder, truth = photos
    failed = sorted(p.name for p in folder.glob('*.png'))[1]
    failing_key = cv2.cvtColor(cv2.imread(str(folder / failed)), cv2.COLOR_BGR2RGB).tobytes()[:4096]

    class FramingFails(StandIn):
        def predict(self, images):
            out = super().predict(images)
            for image, prediction in zip(images, out):
                fails = image.tobytes()[:4096] == failing_key
                prediction.framing = {'review_reason': 'framing unsure: landmark confidence '
                                      '0.41 is below 0.69' if fails else None}
            return out

    logged = []
    store = ReviewStore(str(folder), str(tmp_path / 'reviewed'), FramingFails(truth),
                        log=logged.append, batch_size=NUM_IMAGES)
    listing = store.listing()
    assert listing[0]['name'] == failed and listing[0]['low_count'] == len(StandIn.names)
    assert all(item['low_count'] < len(StandIn.names) for item in listing[1:])
    detail = store.detail(failed)
    assert all(detail['unsure']) and detail['framing_reason'].startswith('framing unsure')
    assert any('framing unsure' in line for line in logged)
    assert store.detail(listing[1]['name'])['framing_reason'] is None
