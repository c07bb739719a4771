"""Annotated pictures: geometry of the output, what is drawn where, and atomic saving."""
import os

import cv2
import numpy as np
import pytest

from cephalometric.drawing import (
    PALETTE,
    draw_comparison,
    draw_landmarks,
    landmark_color,
    save_image,
    upscale,
)
from cephalometric.errors import UserError
from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import compute_measurements

NAMES = list(STANDARD_LANDMARKS)
FACE = np.array([
    (62, 78), (150, 64), (146, 130), (140, 178), (150, 157), (138, 128), (147, 154), (132, 182),
    (155, 120), (96, 124), (80, 170), (135, 206), (160, 62), (190, 112), (170, 126), (173, 144),
    (170, 164), (166, 192), (146, 202)], float)


def image(height=224, width=224):
    rng = np.random.default_rng(0)
    img = np.full((height, width, 3), 128, np.uint8)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    return img


def scaled(point, scale):
    return int(round((point[0] + 0.5) * scale - 0.5)), int(round((point[1] + 0.5) * scale - 0.5))


def test_output_shape_dtype_and_upscaling_rule():
    out = draw_landmarks(image(), NAMES, FACE)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] == 896 and out.shape[1] > 896      # 4x upscale plus the legend panel
    # 600 x 484: the shorter side (484) is scaled to 896, aspect ratio kept.
    out = draw_landmarks(image(600, 484), NAMES, FACE)
    assert out.shape[0] == round(600 * 896 / 484) and out.shape[1] > 896
    # Never downscaled: with no landmarks drawn, the image part is the input unchanged.
    big = image(1000, 1200)
    out = draw_landmarks(big, NAMES, np.full((19, 2), np.nan))
    assert out.shape[0] == 1000 and out.shape[1] > 1200
    assert np.array_equal(out[:1000, :1200], big)
    # The input is not modified.
    img = image()
    copy = img.copy()
    draw_landmarks(img, NAMES, FACE)
    assert np.array_equal(img, copy)


def test_upscale_matches_cv2_resize():
    img = image(100, 150)
    up, sx, sy = upscale(img, 300)
    assert up.shape == (300, 450, 3) and sx == pytest.approx(3) and sy == pytest.approx(3)
    assert np.array_equal(up, cv2.resize(img, (450, 300), interpolation=cv2.INTER_CUBIC))


def test_landmarks_are_drawn_at_scaled_positions_in_their_colour():
    img = image()
    plain, _, _ = upscale(img, 896)
    out = draw_landmarks(img, NAMES, FACE)
    canvas = out[:896, :896].astype(int)
    for i, point in enumerate(FACE):
        x, y = scaled(point, 4.0)
        assert np.abs(canvas[y, x] - plain[y, x]).sum() > 30, NAMES[i]
    # Well separated points show exactly their palette colour at the centre (the rest may overlap).
    for i in (0, 9, 10, 13):
        x, y = scaled(FACE[i], 4.0)
        assert np.abs(canvas[y, x] - np.array(landmark_color(i))).max() <= 2, NAMES[i]
    # Far from every landmark and line the picture is the plain upscaled image.
    assert np.array_equal(out[:40, :40], plain[:40, :40])
    assert np.array_equal(out[850:896, 850:896], plain[850:896, 850:896])


def test_palette_is_distinct_and_stable():
    assert len(set(PALETTE)) == 20
    assert landmark_color(0) == (31, 119, 180)       # tab20 blue
    assert landmark_color(20) == landmark_color(0)


def test_legend_panel_lists_landmarks_in_their_colours():
    out = draw_landmarks(image(), NAMES, FACE)
    panel = out[:, 896:].reshape(-1, 3)
    assert out.shape[1] - 896 >= 150
    colours = {tuple(int(c) for c in px) for px in panel}
    for i in range(19):
        assert landmark_color(i) in colours, NAMES[i]


def test_angle_lines_drawn_only_between_existing_landmarks():
    img = image()
    plain, _, _ = upscale(img, 896)
    s, n, a = FACE[0], FACE[1], FACE[2]
    mid_sn = scaled((s + n) / 2, 4.0)
    mid_na = scaled((n + a) / 2, 4.0)
    out = draw_landmarks(img, NAMES, FACE)
    assert np.abs(out[mid_sn[1], mid_sn[0]].astype(int) - plain[mid_sn[1], mid_sn[0]]).sum() > 30
    assert np.abs(out[mid_na[1], mid_na[0]].astype(int) - plain[mid_na[1], mid_na[0]]).sum() > 30
    # Sella missing (NaN): no S-N line, N-A line still drawn.
    coords = FACE.copy()
    coords[0] = np.nan
    out = draw_landmarks(img, NAMES, coords)
    y, x = mid_sn[1], mid_sn[0]
    assert np.array_equal(out[y - 3:y + 4, x - 3:x + 4], plain[y - 3:y + 4, x - 3:x + 4])
    assert np.abs(out[mid_na[1], mid_na[0]].astype(int) - plain[mid_na[1], mid_na[0]]).sum() > 30


def test_landmark_set_without_s_n_a_b_draws_points_only():
    keep = [i for i, name in enumerate(NAMES)
            if name not in ('sella', 'nasion', 'A point', 'B point')]
    names = [NAMES[i] for i in keep]
    out = draw_landmarks(image(), names, FACE[keep], measurements={})
    assert out.shape[0] == 896 and out.shape[1] > 896
    # With the same points, adding S, N, A, B adds the lines and points: the pictures differ.
    full = draw_landmarks(image(), NAMES, FACE)
    assert not np.array_equal(out[:896, :896], full[:896, :896])


def test_low_confidence_landmark_is_marked():
    img = image()
    high = np.full(19, 0.9)
    low = high.copy()
    low[16] = 0.1                                    # lower lip
    out_high = draw_landmarks(img, NAMES, FACE, scores=high)
    out_low = draw_landmarks(img, NAMES, FACE, scores=low)
    assert out_high.shape[0] == out_low.shape[0]
    # The change is around the lower lip on the image ...
    diff = np.any(out_high[:896, :896] != out_low[:896, :896], axis=2)
    ys, xs = np.nonzero(diff)
    assert len(xs) > 50
    cx, cy = scaled(FACE[16], 4.0)
    assert np.all(np.hypot(xs - cx, ys - cy) < 80)
    # ... and a red review marker appears that the high-score picture lacks.
    def reddish(picture):
        corner = picture[:896, :896]
        return (corner[..., 0] > 230) & (corner[..., 1] < 90) & (corner[..., 2] < 90)
    red, red_high = reddish(out_low), reddish(out_high)
    assert red.sum() > red_high.sum() + 20
    # The threshold decides: 0.1 is not low against a threshold of 0.05 (image part unchanged).
    out_ok = draw_landmarks(img, NAMES, FACE, scores=low, score_threshold=0.05)
    assert np.array_equal(out_ok[:896, :896], out_high[:896, :896])


def test_measurements_are_written_in_the_legend():
    img = image()
    m = compute_measurements(NAMES, FACE)
    without = draw_landmarks(img, NAMES, FACE)
    with_m = draw_landmarks(img, NAMES, FACE, measurements=m)
    assert np.array_equal(without[:896, :896], with_m[:896, :896])
    panel_without = without[:, 896:]
    panel_with = with_m[:, 896:]
    # Text rows below the landmark list exist only with measurements.
    def last_text_row(panel):
        rows = np.nonzero(np.any(np.any(panel != panel[0, 0], axis=2), axis=1))[0]
        return rows.max()
    assert last_text_row(panel_with) > last_text_row(panel_without) + 60


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        draw_landmarks(image(), NAMES[:5], FACE)
    with pytest.raises(ValueError):
        draw_landmarks(image(), NAMES, FACE, scores=np.ones(3))
    with pytest.raises(ValueError):
        draw_landmarks(image().astype(np.float32), NAMES, FACE)


def test_comparison_picture():
    img = image()
    pred = FACE + np.array([6.0, 0.0])
    out = draw_comparison(img, NAMES, FACE, pred)
    assert out.dtype == np.uint8 and out.shape[1] == 512
    bar = out.shape[0] - 512
    assert 0 < bar < 80
    with_title = draw_comparison(img, NAMES, FACE, pred, title='case 7: MRE 6.0 px')
    assert with_title.shape[0] > out.shape[0]
    scale = 512 / 224
    # Gonion: truth circle is green at its rim, the prediction cross red at its centre.
    tx, ty = scaled(FACE[10], scale)
    ring = out[bar + ty - 8:bar + ty + 9, tx - 8:tx + 9].reshape(-1, 3).astype(int)
    assert np.any((ring[:, 1] > 180) & (ring[:, 0] < 100) & (ring[:, 2] < 100))
    px, py = scaled(pred[10], scale)
    centre = out[bar + py, px].astype(int)
    assert centre[0] > 180 and centre[1] < 100 and centre[2] < 100
    with pytest.raises(ValueError):
        draw_comparison(img, NAMES, FACE, pred[:5])


def test_save_image_round_trip(tmp_path):
    picture = draw_landmarks(image(), NAMES, FACE)
    path = tmp_path / 'picture.png'
    save_image(path, picture)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, picture)              # PNG is lossless and channels are not swapped
    save_image(str(tmp_path / 'picture.jpg'), picture)
    jpg = cv2.cvtColor(cv2.imread(str(tmp_path / 'picture.jpg')), cv2.COLOR_BGR2RGB)
    assert jpg.shape == picture.shape and np.abs(jpg.astype(int) - picture).mean() < 8
    # Overwrite in place; no temporary files are left behind.
    save_image(path, picture[:100, :100])
    assert cv2.imread(str(path)).shape == (100, 100, 3)
    assert sorted(os.listdir(tmp_path)) == ['picture.jpg', 'picture.png']


def test_save_image_errors(tmp_path):
    picture = image(20, 20)
    for bad in (tmp_path / 'picture.xyz', tmp_path / 'picture'):
        with pytest.raises(UserError) as error:
            save_image(bad, picture)
        assert 'extension' in str(error.value) and '\n' not in str(error.value)
    with pytest.raises(UserError) as error:
        save_image(tmp_path / 'missing' / 'picture.png', picture)
    assert 'does not exist' in str(error.value)
    a_file = tmp_path / 'file.txt'
    a_file.write_text('x')
    with pytest.raises(UserError):
        save_image(a_file / 'picture.png', picture)
    # The target is a directory: os.replace fails, the error is a UserError, the temporary file
    # is removed.
    (tmp_path / 'taken.png').mkdir()
    with pytest.raises(UserError) as error:
        save_image(tmp_path / 'taken.png', picture)
    assert '\n' not in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ['file.txt', 'taken.png']
