"""The review app: HTTP API (every refusal), saved records, a real browser, and the retraining loop.

API and browser tests use a stand-in predictor (the demo data's true landmarks plus a known error)
so they need no model; the loop test uses the session's tiny trained model through the real CLI.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import export_onnx
import prepare_cephalometric_data
import review_app
from cephalometric.data.demo import make_demo_dataframe
from cephalometric.errors import run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import compute_measurements
from cephalometric.prediction.predictor import Prediction
from cephalometric.review.server import MAX_BODY_BYTES, host_warning, running_server
from cephalometric.review.store import ReviewStore
from tests.helpers import ROOT, call, run_script

NUM_IMAGES = 4


class StandInPredictor:
    """Returns the demo truth moved by a fixed error, with scores that differ per image."""

    names = list(STANDARD_LANDMARKS)

    def __init__(self, truth_by_shape):
        self.truth = truth_by_shape
        self.calls = 0

    def predict(self, images):
        self.calls += len(images)
        out = []
        for image in images:
            truth = self.truth[image.tobytes()[:4096]]
            offset = np.tile([[2.0, -1.5]], (len(truth), 1))
            scores = np.linspace(0.9, 0.5, len(truth))
            scores[3] = 0.1 + 0.05 * (int(image[0, 0, 0]) % 7)   # B point: low, differs per image
            out.append(Prediction(self.names, truth + offset, scores,
                                  (0, 0, image.shape[1], image.shape[0])))
        return out


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """A folder of demo photographs and the stand-in predictor; also a file outside the folder."""
    root = tmp_path_factory.mktemp('review')
    folder = root / 'photos'
    folder.mkdir()
    frame = make_demo_dataframe(NUM_IMAGES, seed=5)
    truth = {}
    for index, row in frame.iterrows():
        rgb = np.asarray(row['Image'], np.uint8).reshape(224, 224, 3)
        cv2.imwrite(str(folder / f'{row["patient_id"]}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        coords = np.array([[row[f'{n}_x'], row[f'{n}_y']] for n in
                           [c[:-2] for c in frame.columns if c.endswith('_x')]], float)
        truth[cv2.cvtColor(cv2.imread(str(folder / f'{row["patient_id"]}.png')),
                           cv2.COLOR_BGR2RGB).tobytes()[:4096]] = coords
    secret = root / 'secret.png'
    cv2.imwrite(str(secret), np.zeros((8, 8, 3), np.uint8))
    os.symlink(secret, folder / 'outside_link.png')          # a symlink leaving the folder
    (folder / 'notes.txt').write_text('not an image')
    return folder, StandInPredictor(truth), secret


@pytest.fixture(scope='module')
def server(photos, tmp_path_factory):
    folder, predictor, _ = photos
    out_dir = tmp_path_factory.mktemp('reviewed')
    store = ReviewStore(str(folder), str(out_dir), predictor, log=lambda text: None)
    with running_server(store) as url:
        yield url, store, out_dir


# ---- API -----------------------------------------------------------------------------------------
def test_listing_orders_least_confident_first_and_leaves_out_links_and_non_images(server):
    url, store, _ = server
    status, session = call(url, '/api/session')
    assert status == 200
    names = [item['name'] for item in session['images']]
    assert sorted(names) == [f'demo_{i:04d}.png' for i in range(1, NUM_IMAGES + 1)]
    scores = [item['min_score'] for item in session['images'] if item['status'] == 'to review']
    assert scores == sorted(scores)
    assert session['landmarks'] == list(STANDARD_LANDMARKS)
    assert [tuple(line) for line in session['lines']] == [(0, 1), (1, 2), (1, 3)]  # S-N, N-A, N-B
    assert session['measurement_info']['ANB']['norm'] == '2 +/- 2'


def test_measurements_come_from_compute_measurements(server):
    url, store, _ = server
    name = 'demo_0002.png'
    status, detail = call(url, f'/api/image/{name}')
    assert status == 200
    points = np.array(detail['points'])
    points[3] += [5.0, 3.0]
    status, answer = call(url, '/api/measurements', {'image': name, 'landmarks': points.tolist()})
    assert status == 200
    # One rounding, in the store: coordinates to 0.01 px, then measurements to 0.01.
    expected = compute_measurements(STANDARD_LANDMARKS, np.round(points, 2))
    assert answer['measurements'].keys() == expected.keys()
    for key, value in expected.items():
        assert answer['measurements'][key] == (value if key == 'skeletal_class'
                                               else round(value, 2))


def test_save_writes_the_inference_layout_with_corrections_and_reopens(server, photos):
    url, store, out_dir = server
    folder, predictor, _ = photos
    name = 'demo_0003.png'
    _, detail = call(url, f'/api/image/{name}')
    points = np.array(detail['points'])
    points[2] = [100.25, 120.5]
    status, answer = call(url, f'/api/save/{name}', {'landmarks': points.tolist()})
    assert status == 200 and answer['saved'] == 'demo_0003.json'
    assert sorted(os.listdir(out_dir)) == ['demo_0003.json']       # no temporary files left
    record = json.loads((out_dir / 'demo_0003.json').read_text())
    assert set(record) >= {'image', 'size', 'bbox', 'landmarks', 'measurements'}
    assert record['image'] == name and record['size'] == [224, 224]
    corrected = [lm['corrected'] for lm in record['landmarks']]
    assert corrected == [i == 2 for i in range(len(points))]
    a_point = record['landmarks'][2]
    assert (a_point['x'], a_point['y']) == (100.25, 120.5)
    assert a_point['predicted'] == {'x': round(detail['predicted'][2][0], 2),
                                    'y': round(detail['predicted'][2][1], 2)}
    assert record['measurements']['ANB'] == round(
        compute_measurements(STANDARD_LANDMARKS, np.round(points, 2))['ANB'], 2)
    assert record['review']['status'] == 'reviewed' and 'date' in record['review']
    listing = {item['name']: item['status'] for item in answer['images']}
    assert listing[name] == 'reviewed' and answer['images'][-1]['name'] == name

    # A new server on the same folders (the old one stopped) shows the saved points and does not
    # predict the reviewed image again.
    calls = predictor.calls
    again = ReviewStore(str(folder), str(out_dir), predictor, log=lambda text: None)
    assert predictor.calls == calls + NUM_IMAGES - 1
    reopened = again.detail(name)
    assert reopened['status'] == 'reviewed'
    assert np.allclose(reopened['points'], points, atol=0.005)
    assert np.allclose(reopened['predicted'], detail['predicted'], atol=0.005)


REFUSALS = [
    # (method path, body or raw bytes, content type, expected status, words in the message)
    ('GET', '/api/image/..%2F..%2Fetc%2Fpasswd', None, None, 403, 'refused'),
    ('GET', '/api/pixels/..%2Fsecret.png', None, None, 403, 'refused'),
    ('GET', '/api/pixels/%2Fetc%2Fpasswd', None, None, 403, 'refused'),
    ('GET', '/api/pixels/outside_link.png', None, None, 404, 'unknown image'),
    ('GET', '/api/image/notes.txt', None, None, 404, 'unknown image'),
    ('GET', '/api/image/nobody.png', None, None, 404, 'unknown image'),
    ('GET', '/static/..%2F..%2Freview_server.py', None, None, 404, 'no such file'),
    ('GET', '/api/../../etc/passwd', None, None, 404, 'not found'),
    ('POST', '/api/save/nobody.png', {'landmarks': []}, None, 404, 'unknown image'),
    ('POST', '/api/save/..%2Fsecret.png', {'landmarks': []}, None, 403, 'refused'),
    ('POST', '/api/measurements', b'x' * (MAX_BODY_BYTES + 1), None, 413, 'too large'),
    ('POST', '/api/measurements', b'{"image": "demo_0001.png"}', 'text/plain', 415, 'JSON'),
    ('POST', '/api/measurements', b'{"image": ', None, 400, 'not valid JSON'),
    ('POST', '/api/measurements', b'[1, 2]', None, 422, 'JSON object'),
    ('POST', '/api/measurements', 'NaN', None, 400, 'NaN'),
    ('POST', '/api/measurements', 'Infinity', None, 400, 'Infinity'),
    ('POST', '/api/measurements', '1e400', None, 422, 'finite'),
    ('POST', '/api/measurements', 'true', None, 422, 'finite'),
    ('POST', '/api/measurements', 'outside', None, 422, 'outside'),
    ('POST', '/api/measurements', 'short', None, 422, '19 [x, y] pairs'),
    ('POST', '/api/measurements', 'unknown-image', None, 404, 'unknown image'),
    ('POST', '/api/save/demo_0001.png', 'NaN', None, 400, 'NaN'),
    ('GET', '/api/save/demo_0001.png', None, None, 405, 'not allowed'),
]


def _refusal_body(server_url, body):
    """Bodies built from a valid landmark list, spoiled in one way."""
    if not isinstance(body, str):
        return body
    _, detail = call(server_url, '/api/image/demo_0001.png')
    text = json.dumps({'image': 'demo_0001.png', 'landmarks': detail['points']})
    first = json.dumps(detail['points'][0][0])
    spoiled = {'NaN': text.replace(first, 'NaN', 1), 'Infinity': text.replace(first, 'Infinity', 1),
               '1e400': text.replace(first, '1e400', 1), 'true': text.replace(first, 'true', 1),
               'outside': text.replace(first, '224.5', 1),
               'short': json.dumps({'image': 'demo_0001.png', 'landmarks': detail['points'][:5]}),
               'unknown-image': text.replace('demo_0001.png', 'nobody.png')}[body]
    return spoiled.encode()


@pytest.mark.parametrize('method, path, body, content_type, status, words', REFUSALS,
                         ids=[f'{r[0]} {r[1][:40]} {r[4]}' for r in REFUSALS])
def test_bad_requests_are_refused_clearly_and_the_server_stays_up(server, method, path, body,
                                                                  content_type, status, words):
    url, store, out_dir = server
    before = sorted(os.listdir(out_dir))
    raw = _refusal_body(url, body)
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    if method == 'GET':
        raw = None
    code, answer = call(url, path, raw=raw, content_type=content_type or 'application/json')
    assert code == status, answer
    assert words in answer['error']
    assert b'root:' not in json.dumps(answer).encode()
    assert sorted(os.listdir(out_dir)) == before          # nothing written by a refused request
    assert call(url, '/api/images')[0] == 200             # still up


def test_symlink_swapped_in_after_start_is_refused(server, photos):
    url, store, _ = server
    folder, _, secret = photos
    target = folder / 'demo_0004.png'
    moved = folder.parent / 'demo_0004_original.png'
    os.replace(target, moved)
    os.symlink(secret, target)
    try:
        status, answer = call(url, '/api/pixels/demo_0004.png')
        assert status == 403 and 'links outside' in answer['error']
    finally:
        os.remove(target)
        os.replace(moved, target)
    status, png = call(url, '/api/pixels/demo_0004.png')
    assert status == 200 and png[:4] == b'\x89PNG'


def test_malformed_http_and_dropped_connections_leave_the_server_up(server):
    import socket
    url, _, _ = server
    host, port = re.match(r'http://([\d.]+):(\d+)/', url).groups()
    for garbage in (b'GARBAGE\r\n\r\n', b'POST /api/measurements HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                    b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ima'):
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(garbage)
            if garbage.startswith(b'GARBAGE'):
                assert connection.recv(100).startswith(b'HTTP/1.1 400')
    assert call(url, '/api/images')[0] == 200


def test_foreign_host_header_is_refused(server):
    url, _, _ = server
    status, _ = call(url, '/api/session', headers={'Host': 'attacker.example'})
    assert status == 400
    assert call(url, '/api/session')[0] == 200


def test_page_has_no_outside_resources(server):
    url, _, _ = server
    for path in ('/', '/static/review.js', '/static/review.css'):
        status, text = call(url, path)
        assert status == 200
        assert not re.search(rb'(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/', text.replace(
            b'http://www.w3.org/2000/svg', b'')), path


# ---- command line --------------------------------------------------------------------------------
def test_cli_refuses_bad_options_in_one_line(tmp_path, capsys, photos):
    folder, _, _ = photos
    checkpoint = tmp_path / 'model.onnx'
    checkpoint.write_bytes(b'not used')
    (tmp_path / 'afile').write_text('x')
    cases = [
        (['--images', str(folder), '--out-dir', str(tmp_path / 'r')], '--checkpoint is required'),
        (['--checkpoint', str(tmp_path / 'none.pth'), '--images', str(folder), '--out-dir',
          str(tmp_path / 'r')], 'not found'),
        (['--checkpoint', str(checkpoint), '--images', str(tmp_path / 'nope'), '--out-dir',
          str(tmp_path / 'r')], 'is not a folder'),
        (['--checkpoint', str(checkpoint), '--images', str(folder), '--out-dir',
          str(tmp_path / 'afile')], 'is a file'),
        (['--checkpoint', str(checkpoint), '--images', str(folder), '--out-dir',
          str(tmp_path / 'r'), '--port', '70000'], '--port must be'),
        (['--checkpoint', str(checkpoint), '--images', str(folder), '--out-dir',
          str(tmp_path / 'r'), '--host', 'no-such-host.invalid'], '--host'),
        (['--images', str(folder), '--out-dir', str(tmp_path / 'empty'), '--export-table',
          str(tmp_path / 't.pkl')], 'not found'),
    ]
    for argv, words in cases:
        assert run_cli(review_app.main, argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith('error: ') and words in err and err.count('\n') == 1, err
    assert not (tmp_path / 'r').exists() and not (tmp_path / 't.pkl').exists()


def test_cli_refuses_a_busy_port(tmp_path, capsys, photos):
    folder, _, _ = photos
    checkpoint = tmp_path / 'model.onnx'
    checkpoint.write_bytes(b'not used')
    from cephalometric.review.server import bind
    busy = bind('127.0.0.1', 0)
    try:
        port = busy.getsockname()[1]
        code = run_cli(review_app.main, ['--checkpoint', str(checkpoint), '--images', str(folder),
                                         '--out-dir', str(tmp_path / 'r'), '--port', str(port)])
    finally:
        busy.close()
    assert code == 2 and 'choose another --port' in capsys.readouterr().err


def test_warns_when_listening_beyond_this_machine():
    assert host_warning('127.0.0.1') == '' and host_warning('localhost') == ''
    assert host_warning('::1') == ''
    assert 'no login' in host_warning('0.0.0.0') and 'no login' in host_warning('192.168.1.5')


# ---- a real browser ------------------------------------------------------------------------------
def page_text(driver, selector):
    """Text of the first element matching `selector` now ('' if none); read in one step, so a
    list the page is re-rendering cannot go stale under the test."""
    return driver.execute_script(
        'const e = document.querySelector(arguments[0]); return e ? e.textContent : ""', selector)


@pytest.mark.slow
def test_browser_drag_changes_anb_and_save_keeps_the_moved_point(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from cephalometric.review.browser import chromium, save_small_png, wait_for

    url, store, out_dir = server
    driver = chromium()
    try:
        driver.get(url)
        # The page asks once for the reviewer's initials.
        wait_for(lambda: driver.execute_script(
            'return document.querySelector("#reviewer-dialog").open'))
        driver.find_element(By.CSS_SELECTOR, '#reviewer-input').send_keys('ab', Keys.ENTER)
        wait_for(lambda: page_text(driver, '[data-measurement="ANB"]'))
        first = driver.execute_script(
            'return document.querySelector("[data-image]").dataset.image')
        name = 'demo_0001.png' if first != 'demo_0001.png' else 'demo_0002.png'
        driver.find_element(By.CSS_SELECTOR, f'[data-image="{name}"]').click()
        wait_for(lambda: name in page_text(driver, '#image-title'))
        before_anb = float(page_text(driver, '[data-measurement="ANB"]'))
        assert before_anb == pytest.approx(store.detail(name)['measurements']['ANB'], abs=0.01)
        point = driver.find_element(By.CSS_SELECTOR, '[data-landmark="B point"]')
        zoom = driver.execute_script('return window.reviewState.zoom')
        start = np.array(store.detail(name)['points'][3])

        # Drag B point 40 screen pixels forward in small steps, as a hand would.
        chain = ActionChains(driver, duration=10).click_and_hold(point)
        for _ in range(8):
            chain.move_by_offset(5, 0)
        chain.release().perform()
        wait_for(lambda: abs(float(page_text(driver, '[data-measurement="ANB"]')) - before_anb)
                 > 0.5)
        moved = np.array(driver.execute_script('return window.reviewState.points[3]'))
        assert moved[0] - start[0] == pytest.approx(40 / zoom, abs=1.0)
        assert moved[1] == pytest.approx(start[1], abs=1.0)
        shown = float(page_text(driver, '[data-measurement="ANB"]'))
        assert shown == pytest.approx(compute_measurements(
            STANDARD_LANDMARKS, np.array(driver.execute_script(
                'return window.reviewState.points')))['ANB'], abs=0.01)

        # Keyboard: select landmark 3 (A point), nudge it right twice, undo once: one step is
        # one screen pixel.
        body = driver.find_element(By.TAG_NAME, 'body')
        a_start = np.array(driver.execute_script('return window.reviewState.points[2]'))
        body.send_keys('3', Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, 'u')
        a_now = np.array(driver.execute_script('return window.reviewState.points[2]'))
        assert a_now - a_start == pytest.approx([1.0 / zoom, 0.0], abs=1e-6)

        driver.find_element(By.CSS_SELECTOR, '[data-action="save"]').click()
        path = out_dir / f'{os.path.splitext(name)[0]}.json'
        record = json.loads(wait_for(lambda: path.exists() and path.read_text()))
        saved = record['landmarks'][3]
        assert saved['corrected'] is True
        assert saved['x'] == pytest.approx(start[0] + 40 / zoom, abs=1.0)
        assert saved['y'] == pytest.approx(start[1], abs=1.0)
        assert (saved['predicted']['x'], saved['predicted']['y']) == pytest.approx(tuple(start),
                                                                                   abs=0.01)
        assert record['landmarks'][2]['x'] == pytest.approx(a_start[0] + 1.0 / zoom, abs=0.01)
        assert record['review']['reviewer'] == 'AB'
        listed = f'[data-image="{name}"]'
        wait_for(lambda: 'reviewed' in page_text(driver, listed))

        # Drag-to-update latency: several drags, median of every update the page made.
        driver.execute_script('window.reviewLatencies = []')
        for step in range(6):
            chain = ActionChains(driver, duration=20).click_and_hold(
                driver.find_element(By.CSS_SELECTOR, '[data-landmark="B point"]'))
            for _ in range(5):
                chain.move_by_offset(-3 if step % 2 else 3, 2 if step % 2 else -2)
            chain.release().perform()
        latencies = wait_for(lambda: driver.execute_script(
            'return window.reviewState.request.inFlight ? null : window.reviewLatencies'))
        print(f'\ndrag-to-update latency: median {statistics.median(latencies):.1f} ms over '
              f'{len(latencies)} updates (max {max(latencies):.1f} ms)')
        assert len(latencies) >= 6

        # Next image by keyboard, then a screenshot of the page.
        body.send_keys('n')
        wait_for(lambda: name not in page_text(driver, '#image-title'))
        raw = tmp_path / 'page.png'
        driver.save_screenshot(str(raw))
        save_small_png(str(raw), str(tmp_path / 'small.png'))
        assert cv2.imread(str(tmp_path / 'small.png')).shape[:2] == (820, 1360)
    finally:
        driver.quit()


# ---- the loop closes -----------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_correct_export_prepare_finetune(trained_run, demo_dataset, tmp_path):
    """Real CLI: review_app.py predicts (with the model exported to .onnx, which starts fastest),
    corrections go through the HTTP API, the export feeds prepare_cephalometric_data.py, and
    train_cephalometric.py fine-tunes from best_MRE.pth."""
    _, prepared = demo_dataset
    checkpoint = trained_run / 'best_MRE.pth'
    onnx_path = tmp_path / 'model.onnx'
    assert run_cli(export_onnx.main, ['--checkpoint', str(checkpoint),
                                      '--out', str(onnx_path)]) == 0
    photos = tmp_path / 'photos'
    photos.mkdir()
    annotations = json.loads((prepared / 'annotations' / 'train.json').read_text())
    truth = {}
    for image, annotation in list(zip(annotations['images'], annotations['annotations']))[:6]:
        source = prepared / 'images' / image['file_name']
        (photos / image['file_name']).write_bytes(source.read_bytes())
        truth[image['file_name']] = np.array(annotation['keypoints'], float).reshape(-1, 3)[:, :2]
    reviewed = tmp_path / 'reviewed'
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'review_app.py'), '--checkpoint', str(onnx_path),
         '--images', str(photos), '--out-dir', str(reviewed), '--port', '0'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output = []
        while True:
            line = process.stdout.readline()
            assert line, 'review_app.py stopped:\n' + ''.join(output)
            output.append(line)
            found = re.search(r'open (http://127\.0\.0\.1:\d+/)', line)
            if found:
                url = found.group(1)
                break
        status, session = call(url, '/api/session')
        assert status == 200 and len(session['images']) == 6
        # The page opens at once; the photographs are predicted in the background.
        deadline = time.monotonic() + 600
        while True:
            progress = call(url, '/api/images')[1]['progress']
            assert progress['failure'] is None, progress
            if progress['done'] == progress['total']:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(0.2)
        for name, points in truth.items():
            status, _ = call(url, f'/api/save/{name}', {'landmarks': points.tolist()})
            assert status == 200
    finally:
        process.terminate()
        process.wait(30)
    records = sorted(os.listdir(reviewed))
    assert records == sorted(f'{os.path.splitext(n)[0]}.json' for n in truth)

    table = tmp_path / 'reviewed.pkl'
    assert run_cli(review_app.main, ['--images', str(photos), '--out-dir', str(reviewed),
                                     '--export-table', str(table)]) == 0
    data_root = tmp_path / 'reviewed_data'
    assert run_cli(prepare_cephalometric_data.main, ['--input', str(table), '--out-dir',
                                                     str(data_root)]) == 0
    train = json.loads((data_root / 'annotations' / 'train.json').read_text())
    for image, annotation in zip(train['images'], train['annotations']):
        expected = truth[image['file_name']]
        got = np.array(annotation['keypoints'], float).reshape(-1, 3)[:, :2]
        assert np.allclose(got, expected, atol=0.01)

    work_dir = tmp_path / 'finetuned'
    run_script('train_cephalometric.py', '--data-root', data_root, '--work-dir', work_dir,
               '--load-from', checkpoint, '--epochs', '1', '--batch-size', '4', '--input-size',
               '64', '--workers', '0', '--framing-epochs', '0', '--warmup-iters',
               '5')
    assert (work_dir / 'best_MRE.pth').is_file()


def test_export_refuses_foreign_json(tmp_path, photos, capsys):
    folder, _, _ = photos
    reviewed = tmp_path / 'reviewed'
    reviewed.mkdir()
    (reviewed / 'demo_0001.json').write_text('{"landmarks": [{"name": "S", "x": 1, "y": 2}]}')
    code = run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(reviewed),
                                     '--export-table', str(tmp_path / 't.pkl')])
    assert code == 2 and 'not a record written by review_app.py' in capsys.readouterr().err
    assert not (tmp_path / 't.pkl').exists()


def test_start_refuses_a_foreign_json_in_out_dir(tmp_path, photos):
    folder, predictor, _ = photos
    out_dir = tmp_path / 'reviewed'
    out_dir.mkdir()
    (out_dir / 'demo_0002.json').write_text('{"something": "else"}')
    from cephalometric.errors import UserError
    with pytest.raises(UserError, match='not a record written by review_app.py'):
        ReviewStore(str(folder), str(out_dir), predictor, log=lambda text: None)
    assert (out_dir / 'demo_0002.json').read_text() == '{"something": "else"}'


@pytest.mark.slow
def test_screenshot_command_with_a_trained_model(trained_run, demo_dataset, tmp_path):
    """The documented screenshot command (make review-screenshot) writes a small PNG."""
    from cephalometric.review import browser as review_browser
    _, prepared = demo_dataset
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name in sorted(os.listdir(prepared / 'images'))[:3]:
        (photos / name).write_bytes((prepared / 'images' / name).read_bytes())
    shot = tmp_path / 'docs' / 'review_app.png'
    assert run_cli(review_browser.main, ['--checkpoint', str(trained_run / 'best_MRE.pth'),
                                         '--images', str(photos), '--out', str(shot)]) == 0
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (720, 1280)


def test_start_refuses_a_review_of_other_landmarks(tmp_path, photos, server):
    """A record saved for another landmark set (another model) stops the start with one line."""
    folder, predictor, _ = photos
    _, store, _ = server
    record = store.record(store.case('demo_0001.png'))
    record['landmarks'] = record['landmarks'][:5]
    out_dir = tmp_path / 'reviewed'
    out_dir.mkdir()
    (out_dir / 'demo_0001.json').write_text(json.dumps(record))
    from cephalometric.errors import UserError
    with pytest.raises(UserError, match="this model predicts"):
        ReviewStore(str(folder), str(out_dir), predictor, log=lambda text: None)
