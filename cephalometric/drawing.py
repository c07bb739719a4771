"""Pictures of landmarks for people: annotated predictions, truth-vs-prediction comparisons, saving.

Everything is drawn with OpenCV (anti-aliased, cv2.LINE_AA) on RGB uint8 arrays; functions return
new arrays and keep no state. Small inputs (e.g. 224x224 model crops) are upscaled first so numbers
and text stay legible.

Coordinates are pixel coordinates of the input image with pixel centres at integers (the convention
of OpenCV and of the landmark tables); upscaling maps x to (x + 0.5) * scale - 0.5.

Imports numpy, OpenCV and the package's `atomic`, `errors`, `landmarks` and `measurements`.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from cephalometric.errors import UserError
from cephalometric.landmarks import estimated_landmarks, find_landmark
from cephalometric.measurements import ANGLE_LINES, CLASS_NAMES, MEASUREMENTS

# matplotlib's tab20 palette (RGB), strong shades first and then the light ones, so neighbouring
# landmark numbers get clearly different colours. Landmark i gets PALETTE[i % 20].
_TAB20 = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44),
    (152, 223, 138), (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213),
    (140, 86, 75), (196, 156, 148), (227, 119, 194), (247, 182, 210), (127, 127, 127),
    (199, 199, 199), (188, 189, 34), (219, 219, 141), (23, 190, 207), (158, 218, 229))
PALETTE: tuple[tuple[int, int, int], ...] = _TAB20[0::2] + _TAB20[1::2]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4                       # sub-pixel bits for cv2 circle/line
_PANEL_BG = (24, 24, 28)
_TEXT = (235, 235, 235)
_DIM_TEXT = (165, 165, 170)
_REVIEW = (255, 64, 64)          # low-confidence marking
_REVIEW_TEXT = '(review)'
_LINE = (255, 255, 255)          # angle lines
_TRUTH = (40, 220, 40)
_PRED = (255, 40, 40)


def landmark_color(index: int) -> tuple[int, int, int]:
    """RGB colour of landmark `index` (0-based), the same in points and legend."""
    return PALETTE[index % len(PALETTE)]


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got dtype {image.dtype}')
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f'expected an RGB image of shape (H, W, 3), got shape {image.shape}')


def upscale(image, min_canvas_size: int):
    """Resize so the shorter side is at least `min_canvas_size` (never down): (image, sx, sy)."""
    image = _as_rgb(image)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError('empty image')
    scale = max(1.0, float(min_canvas_size) / min(height, width))
    if scale == 1.0:
        return image.copy(), 1.0, 1.0
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    return resized, new_w / width, new_h / height


def _scale_points(coords, sx: float, sy: float) -> np.ndarray:
    pts = np.asarray(coords, float).reshape(-1, 2)
    return np.stack([(pts[:, 0] + 0.5) * sx - 0.5, (pts[:, 1] + 0.5) * sy - 0.5], axis=1)


def _fix(point) -> tuple[int, int]:
    """Sub-pixel point for cv2 drawing calls with shift=_SHIFT."""
    return int(round(point[0] * (1 << _SHIFT))), int(round(point[1] * (1 << _SHIFT)))


def _valid(point) -> bool:
    return bool(np.all(np.isfinite(point))) and abs(point[0]) < 1e6 and abs(point[1]) < 1e6


def _outlined_text(img, text, org, scale, color, thickness=1, outline=(0, 0, 0)):
    x, y = int(round(org[0])), int(round(org[1]))
    cv2.putText(img, text, (x, y), _FONT, scale, outline, thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), _FONT, scale, color, thickness, cv2.LINE_AA)


def _outlined_line(img, p, q, color, thickness):
    cv2.line(img, _fix(p), _fix(q), (0, 0, 0), thickness + 2, cv2.LINE_AA, _SHIFT)
    cv2.line(img, _fix(p), _fix(q), color, thickness, cv2.LINE_AA, _SHIFT)


def _place_label(text_size, point, radius, taken, bounds):
    """Top-left corner for a label next to `point`, avoiding boxes in `taken` where possible."""
    (tw, th), base = text_size
    gap = radius + 3
    candidates = [
        (gap, -gap - th), (gap, gap), (-gap - tw, -gap - th), (-gap - tw, gap),
        (gap + 2, -th // 2), (-gap - tw - 2, -th // 2),
        (-tw // 2, -gap - th - 2), (-tw // 2, gap + 2),
        (2 * gap, -2 * gap - th), (2 * gap, 2 * gap),
        (-2 * gap - tw, -2 * gap - th), (-2 * gap - tw, 2 * gap)]
    width, height = bounds
    best, best_cost = None, None
    for dx, dy in candidates:
        x0, y0 = point[0] + dx, point[1] + dy
        box = (x0 - 1, y0 - 1, x0 + tw + 1, y0 + th + base + 1)
        cost = sum(_overlap(box, other) for other in taken)
        if x0 < 0 or y0 < 0 or x0 + tw > width or y0 + th + base > height:
            cost += 1e6
        if best_cost is None or cost < best_cost:
            best, best_cost = box, cost
            if cost == 0:
                break
    return best


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def draw_landmarks(image, names: Sequence[str], coords, scores=None,
                   measurements: Optional[Mapping[str, float]] = None, score_threshold: float = 0.3,
                   min_canvas_size: int = 896, note: Optional[str] = None,
                   estimated: Optional[Sequence[bool]] = None, radius90=None,
                   certainty: Optional[Mapping] = None) -> np.ndarray:
    """Annotated picture of one image's landmarks, as a new RGB uint8 array.

    The image is upscaled (bicubic, never down) so its shorter side is at least `min_canvas_size`;
    each landmark is a filled point in its palette colour with its 1-based number beside it; the
    S-N, N-A and N-B lines are drawn when those landmarks exist; a legend panel on the right lists
    "number name" (and score) in the point's colour, then SNA/SNB/ANB and the skeletal class when
    `measurements` is given. Landmarks with score < `score_threshold` get a red ring and cross and
    "(review)" in the legend. NaN coordinates are listed in the legend as "not found" and not drawn.
    `note` (e.g. why no skeletal class is given) is added to the legend in the review colour.
    Landmarks a photograph cannot show (`estimated`, per landmark; default: the set's skeletal
    points, `landmarks.estimated_landmarks`) are drawn as diamonds, and the legend says so.
    `radius90` (per landmark, image pixels) draws each landmark's 90% error circle; `certainty`
    (an inference record's) adds the 90% intervals of SNA/SNB/ANB and the class probability.
    """
    canvas, sx, sy = upscale(image, min_canvas_size)
    pts = _scale_points(coords, sx, sy)
    count = len(pts)
    if len(names) != count:
        raise ValueError(f'{len(names)} names but {count} coordinate pairs')
    if scores is not None:
        scores = np.asarray(scores, float).reshape(-1)
        if len(scores) != count:
            raise ValueError(f'{len(scores)} scores but {count} landmarks')
    low = [scores is not None and not (scores[i] >= score_threshold) for i in range(count)]
    style = _Style(min(canvas.shape[:2]) / 896.0)   # 1.0 on the default canvas
    if estimated is None:
        estimated = estimated_landmarks(names)
    estimated = [bool(e) for e in estimated]
    if len(estimated) != count:
        raise ValueError(f'{len(estimated)} estimate flags but {count} landmarks')
    if radius90 is not None:
        _draw_error_circles(canvas, pts, np.asarray(radius90, float) * (sx + sy) / 2, style)
    _draw_points(canvas, names, pts, low, style, estimated)
    rows = _legend_rows(names, pts, scores, low, measurements, note, score_threshold, certainty)
    if any(e and _valid(p) for e, p in zip(estimated, pts)):
        rows = [row + (estimated[i],) if i < count else row for i, row in enumerate(rows)]
        rows.append(('', _TEXT, None, False))
        rows.append((ESTIMATE_LEGEND, _TEXT, _TEXT, False, True))
    return _with_legend(canvas, rows, style)


# Legend line for the diamond markers of estimated landmarks.
ESTIMATE_LEGEND = 'diamond: estimated, under the skin (not seen on a photo)'


def _diamond(canvas, centre, half: float, color) -> None:
    """A filled diamond (a square on its corner) of half-diagonal `half` around `centre`."""
    x, y = float(centre[0]), float(centre[1])
    corners = np.array([(x, y - half), (x + half, y), (x, y + half), (x - half, y)])
    cv2.fillPoly(canvas, [np.round(corners * (1 << _SHIFT)).astype(np.int32)], color, cv2.LINE_AA,
                 _SHIFT)


class _Style:
    """Sizes of points, labels and legend for a canvas `unit` times the default one."""

    def __init__(self, unit: float):
        self.unit = unit
        self.radius = max(3.0, 5.0 * unit)
        self.font_scale = max(0.4, 0.55 * unit)
        self.thick = max(1, round(1.4 * unit))


def _draw_points(canvas, names, pts, low, style: _Style, estimated=None) -> None:
    """Angle lines, then each landmark's point and number (review rings on the unsure ones)."""
    height, width = canvas.shape[:2]
    count, radius, thick = len(pts), style.radius, style.thick
    # Angle lines first, so points sit on top of them.
    for start, end in ANGLE_LINES:
        i, j = find_landmark(names, start), find_landmark(names, end)
        if i is None or j is None or i >= count or j >= count:
            continue
        if _valid(pts[i]) and _valid(pts[j]):
            _outlined_line(canvas, pts[i], pts[j], _LINE, thick)

    taken = []
    for i in range(count):
        if _valid(pts[i]):
            r = radius + 2
            taken.append((pts[i][0] - r, pts[i][1] - r, pts[i][0] + r, pts[i][1] + r))
    for i in range(count):
        p = pts[i]
        if not _valid(p):
            continue
        color = landmark_color(i)
        if low[i]:
            _review_target(canvas, p, radius * 2.4, thick + 1)
        if estimated is not None and estimated[i]:
            _diamond(canvas, p, (radius + 1.5) * 1.45, (0, 0, 0))
            _diamond(canvas, p, radius * 1.45, color)
        else:
            cv2.circle(canvas, _fix(p), int((radius + 1.5) * (1 << _SHIFT)), (0, 0, 0), -1,
                       cv2.LINE_AA, _SHIFT)
            cv2.circle(canvas, _fix(p), int(radius * (1 << _SHIFT)), color, -1, cv2.LINE_AA,
                       _SHIFT)
        label = str(i + 1)
        size = cv2.getTextSize(label, _FONT, style.font_scale, thick)
        box = _place_label(size, p, radius * (2.4 if low[i] else 1.0), taken, (width, height))
        taken.append(box)
        _outlined_text(canvas, label, (box[0] + 1, box[1] + 1 + size[0][1]), style.font_scale,
                       color, thick)


def _review_target(canvas, p, ring: float, bold: int) -> None:
    """A ring with crosshair ticks outside it: visible even when the ring is small."""
    cv2.circle(canvas, _fix(p), int(ring * (1 << _SHIFT)), (0, 0, 0), bold + 2, cv2.LINE_AA,
               _SHIFT)
    cv2.circle(canvas, _fix(p), int(ring * (1 << _SHIFT)), _REVIEW, bold, cv2.LINE_AA, _SHIFT)
    for ux, uy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        u = np.array([ux, uy], float)
        a, b = p + u * ring * 0.6, p + u * ring * 1.5
        cv2.line(canvas, _fix(a), _fix(b), (0, 0, 0), bold + 2, cv2.LINE_AA, _SHIFT)
        cv2.line(canvas, _fix(a), _fix(b), _REVIEW, bold, cv2.LINE_AA, _SHIFT)


def _draw_error_circles(canvas, pts, radii, style: _Style) -> None:
    """Each landmark's 90% error circle, thin, in its colour, under the points."""
    for i, (p, r) in enumerate(zip(pts, radii)):
        if _valid(p) and np.isfinite(r) and r > 0:
            cv2.circle(canvas, _fix(p), int(r * (1 << _SHIFT)), landmark_color(i),
                       max(1, style.thick - 1), cv2.LINE_AA, _SHIFT)


def _legend_rows(names, pts, scores, low, measurements, note, score_threshold,
                 certainty=None) -> list:
    """Legend rows: (text, colour, marker colour or None, review mark)."""
    rows = []
    for i in range(len(pts)):
        text = f'{i + 1:>2} {names[i]}'
        if scores is not None:
            text += f'  {scores[i]:.2f}'
        if not _valid(pts[i]):
            text += '  (not found)'
        review = low[i] and _valid(pts[i])
        rows.append((text, landmark_color(i), landmark_color(i), review))
    if measurements:
        rows.append(('', _TEXT, None, False))
        intervals = (certainty or {}).get('intervals', {})
        for key in ('SNA', 'SNB', 'ANB'):
            if key in measurements:
                norm = MEASUREMENTS[key].norm
                span = (f' [{intervals[key][0]:.1f}, {intervals[key][1]:.1f}]'
                        if key in intervals else '')
                rows.append((f'{key} {measurements[key]:5.1f} deg{span}  (norm {norm})', _TEXT,
                             None, False))
        if 'skeletal_class' in measurements:
            cls = int(measurements['skeletal_class'])
            chances = (certainty or {}).get('class_probabilities') or {}
            chance = f' {float(chances[str(cls)]):.2f}' if str(cls) in chances else ''
            borderline = ' (borderline)' if (certainty or {}).get('class_borderline') else ''
            rows.append((f'Skeletal {CLASS_NAMES.get(cls, cls)}{chance}{borderline}', _TEXT,
                         None, False))
    if note:
        rows.append(('', _TEXT, None, False))
        rows.append((note, _REVIEW, None, False))
    if scores is not None and any(low):
        rows.append(('', _TEXT, None, False))
        rows.append((f'red target: score < {score_threshold:g}, please check', _REVIEW, None,
                     False))
    return rows


def _with_legend(canvas, rows: list, style: _Style) -> np.ndarray:
    """`canvas` with a legend panel of `rows` on its right."""
    height, width = canvas.shape[:2]
    unit, thick = style.unit, style.thick
    legend_scale = max(0.45, 0.55 * unit)
    (_, text_h), base = cv2.getTextSize('Ag', _FONT, legend_scale, thick)
    row_h = int(text_h + base + max(6, 8 * unit))
    pad = int(max(10, 14 * unit))
    marker = int(text_h)
    text_w = max([cv2.getTextSize(t + ('  ' + _REVIEW_TEXT if review else ''), _FONT, legend_scale,
                                  thick)[0][0] for t, _, _, review, *_ in rows] + [10])
    panel_w = pad * 3 + marker + text_w
    panel_h = pad * 2 + row_h * len(rows)
    out_h = max(height, panel_h)
    out = np.empty((out_h, width + panel_w, 3), np.uint8)
    out[:] = _PANEL_BG
    out[:height, :width] = canvas
    y = pad
    for text, color, dot, review, *shape in rows:
        baseline_y = y + text_h + (row_h - text_h - base) // 2
        if dot is not None:
            centre = (width + pad + marker / 2, baseline_y - text_h / 2)
            if review:
                cv2.circle(out, _fix(centre), int(marker * 0.75 * (1 << _SHIFT)), _REVIEW, 1,
                           cv2.LINE_AA, _SHIFT)
            if shape and shape[0]:
                _diamond(out, centre, marker * 0.6, dot)
            else:
                cv2.circle(out, _fix(centre), int(marker * 0.45 * (1 << _SHIFT)), dot, -1,
                           cv2.LINE_AA, _SHIFT)
        if text:
            x = width + pad * 2 + marker
            cv2.putText(out, text, (x, baseline_y), _FONT, legend_scale, color, thick, cv2.LINE_AA)
            if review:
                x += cv2.getTextSize(text + '  ', _FONT, legend_scale, thick)[0][0]
                cv2.putText(out, _REVIEW_TEXT, (x, baseline_y), _FONT, legend_scale, _REVIEW, thick,
                            cv2.LINE_AA)
        y += row_h
    return out


def draw_comparison(image, names: Sequence[str], truth, pred, title: Optional[str] = None,
                    min_canvas_size: int = 512) -> np.ndarray:
    """Truth (green circles) against prediction (red crosses), each pair joined by a yellow line.

    For galleries of worst cases. The image is upscaled as in `draw_landmarks`; landmark numbers
    (1-based) sit next to the truth points; `title`, when given, is written in a bar above the image
    together with the symbol key. Pairs with a NaN side are drawn as far as they exist.
    """
    canvas, sx, sy = upscale(image, min_canvas_size)
    height, width = canvas.shape[:2]
    t = _scale_points(truth, sx, sy)
    p = _scale_points(pred, sx, sy)
    if len(t) != len(p):
        raise ValueError(f'{len(t)} truth points but {len(p)} predictions')
    if names is not None and len(names) != len(t):
        raise ValueError(f'{len(names)} names but {len(t)} landmarks')
    unit = min(height, width) / 512.0
    radius = max(3.0, 5.0 * unit)
    thick = max(1, round(1.2 * unit))
    font_scale = max(0.35, 0.42 * unit)
    for i in range(len(t)):
        if _valid(t[i]) and _valid(p[i]):
            cv2.line(canvas, _fix(t[i]), _fix(p[i]), (255, 230, 0), thick, cv2.LINE_AA, _SHIFT)
    for i in range(len(t)):
        if _valid(t[i]):
            cv2.circle(canvas, _fix(t[i]), int((radius) * (1 << _SHIFT)), (0, 0, 0), thick + 2,
                       cv2.LINE_AA, _SHIFT)
            cv2.circle(canvas, _fix(t[i]), int(radius * (1 << _SHIFT)), _TRUTH, thick, cv2.LINE_AA,
                       _SHIFT)
        if _valid(p[i]):
            d = radius
            for a, b in (((-d, -d), (d, d)), ((-d, d), (d, -d))):
                cv2.line(canvas, _fix(p[i] + a), _fix(p[i] + b), (0, 0, 0), thick + 2, cv2.LINE_AA,
                         _SHIFT)
            for a, b in (((-d, -d), (d, d)), ((-d, d), (d, -d))):
                cv2.line(canvas, _fix(p[i] + a), _fix(p[i] + b), _PRED, thick, cv2.LINE_AA, _SHIFT)
    for i in range(len(t)):
        anchor = t[i] if _valid(t[i]) else p[i]
        if _valid(anchor):
            _outlined_text(canvas, str(i + 1), (anchor[0] + radius + 2, anchor[1] - radius - 1),
                           font_scale, (255, 255, 255), 1)
    bar_scale = max(0.45, 0.5 * unit)
    (_, text_h), base = cv2.getTextSize('Ag', _FONT, bar_scale, 1)
    bar_h = text_h + base + 12
    lines = [title] if title else []
    bar = np.empty((bar_h * (len(lines) + 1), width, 3), np.uint8)
    bar[:] = _PANEL_BG
    for row, text in enumerate(lines):
        cv2.putText(bar, _fit_text(text, width - 12, bar_scale), (6, row * bar_h + 6 + text_h),
                    _FONT,
                    bar_scale, _TEXT, 1, cv2.LINE_AA)
    y = len(lines) * bar_h + 6 + text_h
    cv2.putText(bar, 'o truth', (6, y), _FONT, bar_scale, _TRUTH, 1, cv2.LINE_AA)
    offset = 6 + cv2.getTextSize('o truth   ', _FONT, bar_scale, 1)[0][0]
    cv2.putText(bar, 'x prediction', (offset, y), _FONT, bar_scale, _PRED, 1, cv2.LINE_AA)
    return np.concatenate([bar, canvas], axis=0)


def _fit_text(text: str, max_width: int, scale: float) -> str:
    """Shorten `text` with '...' until it fits `max_width` pixels."""
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= max_width:
        return text
    while text and cv2.getTextSize(text + '...', _FONT, scale, 1)[0][0] > max_width:
        text = text[:-1]
    return text + '...'


def encode_image(path, rgb) -> bytes:
    """An RGB (or grayscale/RGBA) uint8 picture encoded for the extension of `path` (.png, .jpg)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if not ext or not cv2.haveImageWriter('x' + ext):
        raise UserError(f'cannot write image "{path}": unknown image extension "{ext}"; '
                        'use .png or .jpg')
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got dtype {rgb.dtype}')
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        data = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    elif rgb.ndim == 2:
        data = rgb
    else:
        raise ValueError(f'expected an image of shape (H, W, 3), got shape {rgb.shape}')
    ok, encoded = cv2.imencode(ext, data)
    if not ok:
        raise UserError(f'cannot write image "{path}": encoding as {ext} failed')
    return encoded.tobytes()


def save_image(path, rgb) -> None:
    """Write an RGB (or grayscale) uint8 picture to `path`, atomically (`atomic.atomic_path`).

    Encoded for the extension of `path`. Raises UserError (one line) for an unknown extension or a
    folder that does not exist or cannot be written.
    """
    from cephalometric.atomic import atomic_path
    path = os.fspath(path)
    data = encode_image(path, rgb)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f'cannot write image "{path}": folder "{folder}" does not exist')
    try:
        with atomic_path(path) as temporary, open(temporary, 'wb') as stream:
            stream.write(data)
    except OSError as error:
        raise UserError(f'cannot write image "{path}": {error.strerror or error}') from None
