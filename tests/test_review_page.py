"""The review page in a real headless Chromium, as a clinic uses it (issue 21, point 11): zoom that
enlarges the photo, pan, picking overlapping points, calibration, the class at ANB 3.99997 the same
on the page and in the file, a not-visible landmark saved and exported as missing, the one-page
report, the page opening before the predictions finish, Tab through every control, help, colours.
Stand-in predictors replace the model, so no training is needed.
"""
import json
import os
import threading
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from test_review_clinic import (
    B_POINT,
    StandIn,
    anb_boundary_points,
    call,
    pdf_pages,
    pdf_text,
    write_photos,
)

import review_app
from cephalometric.errors import run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import CLASS_NAMES
from cephalometric.prediction.predictor import Prediction
from cephalometric.review.server import running_server
from cephalometric.review.store import ReviewStore

pytestmark = pytest.mark.slow
LOWER_APEX = 7


class Overlapping(StandIn):
    """B point and the lower incisor apex 1.2 px apart (as on small photos)."""

    def predict(self, images):
        out = super().predict(images)
        for prediction in out:
            prediction.keypoints[LOWER_APEX] = prediction.keypoints[B_POINT] + [1.2, 0.0]
        return out


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('page') / 'photos'
    return folder, write_photos(folder)


@pytest.fixture(scope='module')
def driver():
    from cephalometric.review.browser import chromium
    browser = chromium(1024, 768)
    yield browser
    browser.quit()


@pytest.fixture
def page(photos, tmp_path, driver):
    """A served store (overlapping B point / lower apex) opened in the browser, initials typed."""
    folder, truth = photos
    out_dir = tmp_path / 'reviewed'
    store = ReviewStore(str(folder), str(out_dir), Overlapping(truth), log=lambda text: None,
                        model={'file': 'best_MRE.pth', 'sha256': 'cd' * 32})
    with running_server(store) as url:
        open_page(driver, url)
        yield driver, url, store, out_dir


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def text(driver, selector):
    return js(driver, 'const e = document.querySelector(arguments[0]); '
                      'return e ? e.textContent : ""', selector)


def wait(condition, timeout=20.0):
    from cephalometric.review.browser import wait_for
    return wait_for(condition, timeout)


def open_page(driver, url, initials='ab'):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    js(driver, 'sessionStorage.clear()') if driver.current_url.startswith('http') else None
    driver.get(url)
    wait(lambda: js(driver, 'return document.querySelector("#reviewer-dialog").open'))
    driver.find_element(By.CSS_SELECTOR, '#reviewer-input').send_keys(initials, Keys.ENTER)
    wait(lambda: text(driver, '[data-measurement="ANB"]') and js(
        driver, 'return !document.querySelector("#reviewer-dialog").open'))


def photo_rect(driver):
    return js(driver, 'const r = document.querySelector("#photo").getBoundingClientRect();'
                      'return [r.left, r.top, r.width, r.height]')


def screen_of(driver, index):
    return js(driver, 'return window.review.toScreen(...window.reviewState.points[arguments[0]])',
              index)


def keys(driver, *sequence):
    from selenium.webdriver.common.by import By
    driver.find_element(By.TAG_NAME, 'body').send_keys(*sequence)


def press_at(driver, x, y, moves=(), hold_key=None):
    """Press the mouse at client (x, y), move by `moves` (dx, dy) steps, release."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    builder = ActionBuilder(driver, mouse=PointerInput('mouse', 'mouse'), duration=15)
    if hold_key:
        builder.key_action.key_down(hold_key)
    builder.pointer_action.move_to_location(int(round(x)), int(round(y)))
    builder.pointer_action.pointer_down(MouseButton.LEFT)
    for dx, dy in moves:
        x, y = x + dx, y + dy
        builder.pointer_action.move_to_location(int(round(x)), int(round(y)))
    builder.pointer_action.pointer_up(MouseButton.LEFT)
    if hold_key:
        builder.key_action.key_up(hold_key)
    builder.perform()


def open_image(driver, name):
    js(driver, 'window.review.openImage(arguments[0])', name)
    wait(lambda: name in text(driver, '#image-title'))


# ---- zoom and pan --------------------------------------------------------------------------------
def test_zoom_doubles_the_photo_about_the_selected_point_and_pan_moves_it(page):
    driver, url, store, _ = page
    before = photo_rect(driver)
    keys(driver, '5')                                        # upper 1 tip selected
    anchor = screen_of(driver, 4)
    keys(driver, '+', '+')                                   # two steps of sqrt(2)
    after = photo_rect(driver)
    assert after[2] == pytest.approx(2 * before[2], rel=0.01)
    assert after[3] == pytest.approx(2 * before[3], rel=0.01)
    assert screen_of(driver, 4) == pytest.approx(anchor, abs=1.5)   # the point stays put
    # The point markers keep their screen size (11 px across), they do not shrink.
    size = js(driver, 'const r = document.querySelector("[data-index=\\"4\\"].point")'
                      '.getBoundingClientRect(); return r.width')
    assert 10 <= size <= 13

    # Pan: drag the background (far from every point) by (-120, -80).
    viewer = js(driver, 'const r = document.querySelector("#viewer").getBoundingClientRect();'
                        'return [r.left, r.top, r.width, r.height]')
    start = (viewer[0] + viewer[2] - 40, viewer[1] + viewer[3] - 40)
    screens = [screen_of(driver, i) for i in range(19)]
    assert min(np.hypot(x - start[0], y - start[1]) for x, y in screens) > 20
    points = js(driver, 'return window.reviewState.points')
    rect = photo_rect(driver)
    press_at(driver, *start, moves=[(-30, -20)] * 4)
    moved = photo_rect(driver)
    assert moved[0] - rect[0] == pytest.approx(-120, abs=2)
    assert moved[1] - rect[1] == pytest.approx(-80, abs=2)
    assert js(driver, 'return window.reviewState.points') == points      # nothing was dragged

    # Space + drag pans even when it starts on a point.
    rect = photo_rect(driver)
    point = screen_of(driver, 4)
    before_point = js(driver, 'return window.reviewState.points[4]')
    press_at(driver, *point, moves=[(20, 10)] * 3, hold_key=' ')
    assert photo_rect(driver)[0] - rect[0] == pytest.approx(60, abs=2)
    assert js(driver, 'return window.reviewState.points[4]') == before_point

    # Wheel zoom keeps the image point under the cursor.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    cursor = (viewer[0] + viewer[2] / 2 + 37, viewer[1] + viewer[3] / 2 - 21)
    under = js(driver, 'return window.review.toImage({clientX: arguments[0], clientY: '
                       'arguments[1]})', *cursor)
    zoom = js(driver, 'return window.reviewState.zoom')
    origin = ScrollOrigin.from_element(driver.find_element(By.ID, 'viewer'),
                                       int(cursor[0] - viewer[0] - viewer[2] / 2),
                                       int(cursor[1] - viewer[1] - viewer[3] / 2))
    ActionChains(driver).scroll_from_origin(origin, 0, -200).perform()
    wait(lambda: js(driver, 'return window.reviewState.zoom') > zoom * 1.05)
    assert js(driver, 'return window.review.toImage({clientX: arguments[0], clientY: '
                      'arguments[1]})', *cursor) == pytest.approx(under, abs=1.0)

    # A sideways swipe pans; it does not zoom.
    zoom = js(driver, 'return window.reviewState.zoom')
    left = photo_rect(driver)[0]
    ActionChains(driver).scroll_from_origin(origin, 120, 0).perform()
    wait(lambda: photo_rect(driver)[0] != left)
    assert js(driver, 'return window.reviewState.zoom') == zoom

    # Nudge: one arrow press is one screen pixel at any zoom.
    zoom = js(driver, 'return window.reviewState.zoom')
    start_point = js(driver, 'return window.reviewState.points[4]')
    keys(driver, '\ue014')                                   # ArrowRight
    now = js(driver, 'return window.reviewState.points[4]')
    assert (now[0] - start_point[0]) * zoom == pytest.approx(1.0, abs=1e-6)
    # Fit brings the whole photo back into the view.
    keys(driver, '0')
    rect = photo_rect(driver)
    viewer = js(driver, 'const v = document.querySelector("#viewer"); const r = '
                        'v.getBoundingClientRect(); return [r.left, r.top, v.clientWidth, '
                        'v.clientHeight]')
    assert rect[0] >= viewer[0] - 1 and rect[1] >= viewer[1] - 1
    assert rect[0] + rect[2] <= viewer[0] + viewer[2] + 1
    assert rect[1] + rect[3] <= viewer[1] + viewer[3] + 1


def test_large_photo_fits_and_is_sent_scaled_down_with_a_loading_sign(tmp_path, driver):
    folder = tmp_path / 'big'
    folder.mkdir()
    big = np.full((3000, 4500, 3), 120, np.uint8)
    cv2.circle(big, (2250, 1500), 400, (255, 255, 255), -1)
    cv2.imwrite(str(folder / 'camera.jpg'), big)

    class Big:
        names = list(STANDARD_LANDMARKS)

        def predict(self, images):
            points = np.array([[1000 + 120 * i, 800 + 70 * i] for i in range(19)], float)
            return [Prediction(self.names, points, np.ones(19), (0, 0, 4500, 3000))
                    for _ in images]

    store = ReviewStore(str(folder), str(tmp_path / 'r'), Big(), log=lambda text: None)
    with running_server(store) as url:
        open_page(driver, url)
        wait(lambda: js(driver, 'return document.querySelector("#loading").hidden'))
        href = js(driver, 'return document.querySelector("#photo").getAttribute("href")')
        assert '?max=' in href
        side = int(href.split('?max=')[1])
        assert side < 4500
        rect = photo_rect(driver)
        viewer = js(driver, 'const v = document.querySelector("#viewer"); return '
                            '[v.clientWidth, v.clientHeight]')
        assert rect[2] <= viewer[0] and rect[3] <= viewer[1]
        assert rect[2] >= 0.9 * viewer[0] or rect[3] >= 0.9 * viewer[1]
        # Coordinates stay in the original's pixels.
        assert js(driver, 'return window.reviewState.points[0]') == [1000.0, 800.0]
        # The loading sign shows while a photo loads (here the full-size one) and then goes.
        assert js(driver, 'window.review.loadPhoto(0); '
                          'return !document.querySelector("#loading").hidden')
        wait(lambda: js(driver, 'return document.querySelector("#loading").hidden'))
        assert js(driver, 'return document.querySelector("#photo").getAttribute("href")') == \
            '/api/pixels/camera.jpg'


def test_intervals_and_the_class_probability_show_and_narrow_where_a_point_is_placed(
        photos, tmp_path, driver):
    """With an error calibration each measurement shows its 90% interval and the class its
    probability (`ANB 3.2 [1.9, 4.4]`, `Class I 0.71`); moving A point (now placed by a person)
    narrows the ANB interval as the page recomputes it."""
    folder, truth = photos

    class Calibrated(StandIn):
        def predict(self, images):
            out = super().predict(images)
            for prediction in out:
                prediction.radius90 = np.full(len(prediction.names), 4.0)
            return out
    store = ReviewStore(str(folder), str(tmp_path / 'r'), Calibrated(truth),
                        log=lambda text: None)
    with running_server(store) as url:
        open_page(driver, url)
        anb = float(text(driver, '[data-measurement="ANB"]'))
        shown = text(driver, '.interval[data-measurement="ANB"]')
        low, high = (float(v) for v in shown.strip('[]').split(','))
        assert low < anb < high
        probability = text(driver, '.interval[data-measurement="skeletal_class"]')
        assert probability.startswith('p ')
        assert 0.0 <= float(probability.split()[1].rstrip(',')) <= 1.0
        assert 'probability of each class' in js(
            driver, 'return document.querySelector(".interval[data-measurement=skeletal_class]")'
                    '.title')
        a_point = STANDARD_LANDMARKS.index('A point')
        points = js(driver, 'return window.reviewState.points')
        points[a_point] = [points[a_point][0] + 1.0, points[a_point][1]]
        js(driver, 'window.review.setPoints(arguments[0])', points)

        def narrowed():
            now = text(driver, '.interval[data-measurement="ANB"]').strip('[]').split(',')
            return len(now) == 2 and float(now[1]) - float(now[0]) < 0.9 * (high - low)
        wait(narrowed)


# ---- picking -------------------------------------------------------------------------------------
def test_overlapping_points_can_each_be_picked_and_dragged(page):
    driver, url, store, _ = page
    name = text(driver, '#image-title').split()[0]
    b_screen = screen_of(driver, B_POINT)
    apex_screen = screen_of(driver, LOWER_APEX)
    assert abs(b_screen[0] - apex_screen[0]) < 8             # they overlap on the screen
    press_at(driver, *b_screen)
    assert js(driver, 'return window.reviewState.selected') == B_POINT     # the nearest
    press_at(driver, *b_screen)
    assert js(driver, 'return window.reviewState.selected') == LOWER_APEX  # a second press
    press_at(driver, *b_screen)
    assert js(driver, 'return window.reviewState.selected') == B_POINT     # and round again
    keys(driver, 'c')
    assert js(driver, 'return window.reviewState.selected') == LOWER_APEX  # the key cycles too
    # A press on the selected point drags it: the apex moves, B point stays.
    press_at(driver, *b_screen, moves=[(0, 6)] * 5)
    points = js(driver, 'return window.reviewState.points')
    before = store.detail(name)['points']
    zoom = js(driver, 'return window.reviewState.zoom')
    assert points[B_POINT] == before[B_POINT]
    assert points[LOWER_APEX][1] - before[LOWER_APEX][1] == pytest.approx(30 / zoom, abs=1.0)


# ---- one truth and the case workflow -------------------------------------------------------------
def test_class_at_anb_3_99997_is_the_same_on_the_page_and_in_the_file(page):
    driver, url, store, out_dir = page
    name = text(driver, '#image-title').split()[0]
    points, anb = anb_boundary_points(store, name)
    assert 3.999 < anb < 4.0
    noisy = points + np.random.default_rng(1).uniform(-0.004, 0.004, points.shape)
    js(driver, 'window.reviewLatencies = []; window.review.setPoints(arguments[0])',
       noisy.tolist())
    wait(lambda: js(driver, 'return window.reviewLatencies.length && '
                            '!window.reviewState.request.inFlight'))
    shown_class = js(driver, 'return document.querySelector("[data-measurement=skeletal_class]")'
                             '.dataset.value')
    shown_anb = text(driver, '[data-measurement="ANB"]')
    js(driver, 'document.querySelector("[data-action=save]").click()')
    path = out_dir / f'{os.path.splitext(name)[0]}.json'
    record = json.loads(wait(lambda: path.exists() and path.read_text()))
    assert str(record['measurements']['skeletal_class']) == shown_class == '1'
    assert f"{record['measurements']['ANB']:.2f}" == shown_anb == '4.00'
    wait(lambda: 'reviewed' in text(driver, '#image-title'))
    assert js(driver, 'return document.querySelector("[data-measurement=skeletal_class]")'
                      '.dataset.value') == '1'
    assert text(driver, '[data-measurement="ANB"]') == '4.00'
    assert record['review']['reviewer'] == 'AB'

    # Undo back to the saved state clears "unsaved".
    keys(driver, '5', '\ue014')
    wait(lambda: 'unsaved' in text(driver, f'[data-image="{name}"]'))
    keys(driver, 'u')
    wait(lambda: 'unsaved' not in text(driver, f'[data-image="{name}"]'))
    assert js(driver, 'return Object.keys(window.reviewState.edits).length') == 0


def test_not_visible_landmark_is_saved_and_exported_as_missing(page, photos, tmp_path):
    driver, url, store, out_dir = page
    folder, _ = photos
    name = text(driver, '#image-title').split()[0]
    keys(driver, str(B_POINT + 1), 'v')
    wait(lambda: 'not visible' in text(driver, '#landmarks'))
    assert js(driver, 'return window.reviewState.points[arguments[0]]', B_POINT) is None
    wait(lambda: not text(driver, '[data-measurement="ANB"]'))   # left out of the measurements
    current_count = text(driver, '#counter')
    js(driver, 'document.querySelector("[data-action=save-next]").click()')
    path = out_dir / f'{os.path.splitext(name)[0]}.json'
    record = json.loads(wait(lambda: path.exists() and path.read_text()))
    landmark = record['landmarks'][B_POINT]
    assert landmark['x'] is None and landmark['visible'] is False
    assert 'ANB' not in record['measurements']
    wait(lambda: name not in text(driver, '#image-title'))       # save and next
    assert text(driver, '#counter') != current_count and text(driver, '#counter').startswith('1 ')
    table = tmp_path / 'table.pkl'
    assert run_cli(review_app.main, ['--images', str(folder), '--out-dir', str(out_dir),
                                     '--export-table', str(table)]) == 0
    frame = pd.read_pickle(table)
    assert np.isnan(frame.loc[0, 'B point_x']) and np.isfinite(frame.loc[0, 'A point_x'])

    # Cannot trace, with a reason from the dialog.
    second = text(driver, '#image-title').split()[0]
    js(driver, 'document.querySelector("[data-action=cannot-trace]").click()')
    wait(lambda: js(driver, 'return document.querySelector("#trace-dialog").open'))
    js(driver, 'document.querySelector("#trace-reason").value = "blurred";'
               'document.querySelector("#trace-dialog button[value=ok]").click()')
    path = out_dir / f'{os.path.splitext(second)[0]}.json'
    record = json.loads(wait(lambda: path.exists() and path.read_text()))
    assert record['review'] == {**record['review'], 'status': 'cannot trace', 'reason': 'blurred'}
    wait(lambda: 'cannot trace' in text(driver, f'[data-image="{second}"]'))


def test_calibration_changes_the_mm_values_correctly(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver, url, store, out_dir = page
    name = text(driver, '#image-title').split()[0]
    px = float(text(driver, '[data-measurement="U1_NA_px"]'))
    keys(driver, 'k')
    for image_point in ((20.0, 40.0), (20.0, 140.0)):        # 100 px apart
        press_at(driver, *js(driver, 'return window.review.toScreen(...arguments)', *image_point))
    wait(lambda: js(driver, 'return document.querySelector("#length-dialog").open'))
    driver.find_element(By.ID, 'length-input').send_keys('20', Keys.ENTER)   # 20 mm
    wait(lambda: text(driver, '[data-measurement="U1_NA_mm"]'))
    calibration = js(driver, 'return window.reviewState.calibration')
    distance = np.hypot(*np.subtract(*calibration['points']))
    assert distance == pytest.approx(100, abs=1.5)
    mm = float(text(driver, '[data-measurement="U1_NA_mm"]'))
    assert mm == pytest.approx(px * 20 / distance, abs=0.011)
    assert 'mm per pixel' in text(driver, '#calibration-note')
    js(driver, 'document.querySelector("[data-action=save]").click()')
    path = out_dir / f'{os.path.splitext(name)[0]}.json'
    record = json.loads(wait(lambda: path.exists() and path.read_text()))
    assert record['calibration']['length_mm'] == 20
    assert record['measurements']['U1_NA_mm'] == mm

    # The report from the page: one page with the class and the reviewer's initials.
    wait(lambda: js(driver, 'return document.querySelector("#report-link")'
                            '.getAttribute("aria-disabled")') == 'false')
    href = js(driver, 'return document.querySelector("#report-link").href')
    keys(driver, '5', '\ue014')                             # an unsaved edit: no report of it
    assert js(driver, 'return document.querySelector("#report-link")'
                      '.getAttribute("aria-disabled")') == 'true'
    keys(driver, 'u')
    assert js(driver, 'return document.querySelector("#report-link")'
                      '.getAttribute("aria-disabled")') == 'false'
    status, pdf = call(url, href[len(url.rstrip('/')):])
    assert status == 200 and pdf_pages(pdf) == 1
    words = pdf_text(pdf)
    assert f"Skeletal {CLASS_NAMES[record['measurements']['skeletal_class']]}  " in words
    assert 'Reviewer: AB' in words


# ---- start at once -------------------------------------------------------------------------------
def test_page_opens_before_the_predictions_finish(photos, tmp_path, driver):
    folder, truth = photos
    gate = threading.Event()
    store = ReviewStore(str(folder), str(tmp_path / 'r'), StandIn(truth, gate=gate),
                        log=lambda text: None, background=True, batch_size=1)
    with running_server(store) as url:
        started = time.monotonic()
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        driver.get(url)
        wait(lambda: js(driver, 'return document.querySelector("#reviewer-dialog").open'))
        driver.find_element(By.CSS_SELECTOR, '#reviewer-input').send_keys('ab', Keys.ENTER)
        wait(lambda: 'predicting 0/3' in text(driver, '#progress'))
        assert time.monotonic() - started < 10
        assert not js(driver, 'return document.querySelector("#waiting").hidden')
        assert text(driver, '#counter') == '0 done / 3 left'
        # The list is rebuilt as predictions come in; the keyboard focus stays where it was.
        js(driver, 'document.querySelector("#images li:nth-child(2) button").focus()')
        time.sleep(1.6)                                      # two polls of the progress
        assert js(driver, 'return document.activeElement.closest("li").dataset.image') == \
            'demo_0002.png'
        gate.set()
        wait(lambda: text(driver, '[data-measurement="ANB"]'))
        wait(lambda: 'all 3 predicted' in text(driver, '#progress'))
        assert js(driver, 'return document.querySelectorAll("#images li.to-review").length') == 3


# ---- help and access -----------------------------------------------------------------------------
def test_tab_reaches_every_control_and_help_defines_every_landmark(page):
    from selenium.webdriver.common.keys import Keys
    driver, url, store, _ = page
    js(driver, 'document.activeElement.blur()')
    seen = set()
    controls = js(driver, 'return [...document.querySelectorAll("header button, header a, '
                          '#images button, #landmarks button, #viewer")].length')
    for _ in range(controls + 5):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        seen.add(js(driver, 'const e = document.activeElement; return e.dataset.action || '
                            '(e.closest("#images") ? "image:" + e.closest("li").dataset.image : '
                            '(e.closest("#landmarks") ? "landmark:" + [...e.closest("ol")'
                            '.children].indexOf(e.closest("li")) : e.id || e.tagName))'))
    for action in ('zoom-in', 'zoom-out', 'zoom-fit', 'undo', 'reset', 'not-visible', 'calibrate',
                   'cannot-trace', 'save', 'save-next', 'reviewer', 'help'):
        assert action in seen, action
    assert {f'image:{name}' for name in store.cases} <= seen
    assert {f'landmark:{i}' for i in range(19)} <= seen
    assert 'viewer' in seen
    # Enter on an image in the list opens it.
    js(driver, 'document.querySelector("#images li:last-child button").focus()')
    last = js(driver, 'return document.querySelector("#images li:last-child").dataset.image')
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait(lambda: last in text(driver, '#image-title'))

    # Help: the key list and a definition of each landmark, marked estimates included.
    js(driver, 'document.querySelector("#viewer").focus()')
    keys(driver, '?')
    wait(lambda: js(driver, 'return document.querySelector("#help").open'))
    rows = js(driver, 'return [...document.querySelectorAll("#definitions tbody tr")]'
                      '.map(r => r.textContent)')
    assert len(rows) == 19 and all(len(row) > 30 for row in rows)
    assert 'estimate' in rows[0] and 'sella' in rows[0].lower()
    assert 'Ctrl+Z' in text(driver, '#help')
    js(driver, 'document.querySelector("#help").close()')
    # Hover text of a landmark is its definition.
    assert 'sella turcica' in js(driver, 'return document.querySelector("#landmarks li button")'
                                         '.title')


def test_estimates_are_drawn_distinctly_and_colours_stay_apart(page):
    driver, url, store, _ = page
    shapes = js(driver, 'return [...document.querySelectorAll("path.point")]'
                        '.map(p => p.getAttribute("d").split("L").length)')
    estimated = [row['estimated'] for row in store.session()['help']]
    for count, is_estimate in zip(shapes, estimated):
        assert (count == 4) == is_estimate            # diamonds: M + 3 L segments
    assert 'estimate' in text(driver, '.legend')
    ring = js(driver, 'const r = document.querySelector(".low-ring"); '
                      'return r ? getComputedStyle(r).stroke : null')
    b_colour = js(driver, 'return getComputedStyle(document.querySelector('
                          '"[data-landmark=\\"B point\\"]")).fill')
    assert ring is None or ring != b_colour
    rgb = [int(v) for v in b_colour[4:-1].split(',')]
    assert not (rgb[0] > 200 and rgb[1] < 80 and rgb[2] < 80)    # B point is not red any more
    # The marks carry a sign, not colour alone.
    marked = js(driver, 'return [...document.querySelectorAll("#measurements tr")]'
                        '.filter(r => /mark-/.test(r.className)).map(r => '
                        'r.querySelector(".mark").textContent)')
    assert marked and all(sign for sign in marked)


def test_touch_pans_and_pinches_and_a_loupe_follows_a_drag(page):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    driver, url, store, _ = page

    def touch(kind, points):
        driver.execute_cdp_cmd('Input.dispatchTouchEvent', {'type': kind, 'touchPoints': [
            {'x': x, 'y': y, 'id': i} for i, (x, y) in enumerate(points)]})

    js(driver, 'window.review.setZoom(window.reviewState.zoom * 2)')
    viewer = js(driver, 'const r = document.querySelector("#viewer").getBoundingClientRect();'
                        'return [r.left, r.top, r.width, r.height]')
    x, y = viewer[0] + viewer[2] - 40, viewer[1] + viewer[3] - 40
    left = photo_rect(driver)[0]
    touch('touchStart', [(x, y)])
    for step in range(1, 6):
        touch('touchMove', [(x - 20 * step, y)])
    touch('touchEnd', [])
    assert photo_rect(driver)[0] - left == pytest.approx(-100, abs=2)
    zoom = js(driver, 'return window.reviewState.zoom')
    mx, my = viewer[0] + viewer[2] / 2, viewer[1] + viewer[3] / 2
    touch('touchStart', [(mx - 30, my), (mx + 30, my)])
    for step in range(1, 6):
        touch('touchMove', [(mx - 30 - 10 * step, my), (mx + 30 + 10 * step, my)])
    touch('touchEnd', [])
    assert js(driver, 'return window.reviewState.zoom') / zoom == pytest.approx(160 / 60, rel=0.02)

    # While a point is dragged, a zoomed inset shows the photo around it.
    point = screen_of(driver, 4)
    builder = ActionBuilder(driver, duration=10)
    builder.pointer_action.move_to_location(int(point[0]), int(point[1]))
    builder.pointer_action.pointer_down(MouseButton.LEFT)
    builder.pointer_action.move_to_location(int(point[0]) + 5, int(point[1]) + 3)
    builder.perform()
    assert js(driver, 'return !document.querySelector("#loupe").hidden')
    view_box = [float(v) for v in js(driver, 'return document.querySelector("#loupe")'
                                             '.getAttribute("viewBox")').split()]
    centre = js(driver, 'return window.reviewState.points[4]')
    assert view_box[0] + view_box[2] / 2 == pytest.approx(centre[0], abs=0.01)
    assert view_box[2] < 180 / js(driver, 'return window.reviewState.zoom')   # enlarged
    builder = ActionBuilder(driver, duration=10)
    builder.pointer_action.pointer_up(MouseButton.LEFT)
    builder.perform()
    assert js(driver, 'return document.querySelector("#loupe").hidden')


def test_reset_and_the_list_follows_the_current_image(tmp_path, driver):
    folder = tmp_path / 'many'
    truth = write_photos(folder, count=24, seed=9)
    store = ReviewStore(str(folder), str(tmp_path / 'r'), StandIn(truth), log=lambda text: None)
    with running_server(store) as url:
        open_page(driver, url)
        name = text(driver, '#image-title').split()[0]
        predicted = store.detail(name)['predicted']
        keys(driver, '1', '\ue014', '\ue014', '2', '\ue015')     # move sella and nasion
        moved = js(driver, 'return window.reviewState.points')
        zoom = js(driver, 'return window.reviewState.zoom')
        assert (moved[0][0] - predicted[0][0]) * zoom == pytest.approx(2, abs=1e-6)
        assert (moved[1][1] - predicted[1][1]) * zoom == pytest.approx(1, abs=1e-6)
        assert moved[2:] == predicted[2:]
        keys(driver, 'r')
        assert js(driver, 'return window.reviewState.points') == predicted
        keys(driver, 'u')                                        # undo brings the moves back
        assert js(driver, 'return window.reviewState.points') != predicted

        def current_is_visible():
            return js(driver, 'const li = document.querySelector("#images li.current");'
                              'const nav = document.querySelector("#image-panel")'
                              '.getBoundingClientRect(); if (!li) return false;'
                              'const r = li.getBoundingClientRect();'
                              'return r.top >= nav.top - 1 && r.bottom <= nav.bottom + 1 && '
                              'li.dataset.image')
        keys(driver, 'p')                                        # wraps to the last image
        last = js(driver, 'return document.querySelector("#images li:last-child").dataset.image')
        wait(lambda: last in text(driver, '#image-title'))
        assert wait(current_is_visible) == last
        keys(driver, 'n')
        first = js(driver, 'return document.querySelector("#images li").dataset.image')
        wait(lambda: first in text(driver, '#image-title'))
        assert wait(current_is_visible) == first
