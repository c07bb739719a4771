"""Building blocks of an evaluation report: class agreement, error statistics, figures, tables.

evaluate.py assembles them; they are kept here so other tools (a notebook, a comparison of runs) can
produce the same numbers and pictures. Figures use matplotlib's object API (Figure, saved through
the Agg renderer), not pyplot, so they work without a display and leave no global state behind.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from .measurements import CLASS_NAMES, MEASUREMENTS

CLASS_LABELS = (1, 2, 3)


def confusion_matrix(truth: Sequence, predicted: Sequence,
                     labels: Sequence[int] = CLASS_LABELS) -> np.ndarray:
    """Counts (len(labels), len(labels)): row = true label, column = predicted label.

    Pairs where either side is None or not one of `labels` are left out (an image whose class
    cannot be computed, or has no recorded class, says nothing about agreement).
    """
    if len(truth) != len(predicted):
        raise ValueError(f'{len(truth)} true labels but {len(predicted)} predicted')
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), int)
    for true, pred in zip(truth, predicted):
        if true in index and pred in index:
            matrix[index[true], index[pred]] += 1
    return matrix


def class_agreement(truth: Sequence, predicted: Sequence,
                    labels: Sequence[int] = CLASS_LABELS) -> dict:
    """{'n', 'accuracy' (fraction 0..1, None when n is 0), 'labels', 'confusion' (lists)}."""
    matrix = confusion_matrix(truth, predicted, labels)
    n = int(matrix.sum())
    return {'n': n,
            'accuracy': float(np.trace(matrix) / n) if n else None,
            'labels': [CLASS_NAMES.get(label, str(label)) for label in labels],
            'confusion': matrix.tolist()}


def error_values(errors_px: np.ndarray, visible: np.ndarray,
                 mm_per_pixel: np.ndarray) -> tuple[np.ndarray, str]:
    """The landmark errors that `summarize_radial_errors`' headline MRE averages, and their unit.

    Same rule as there: millimetres over the images with a spacing when any image has one,
    otherwise pixels over all images. Returns (1-D values, 'mm' or 'px').
    """
    errors_px = np.asarray(errors_px, float)
    visible = np.asarray(visible, bool) & np.isfinite(errors_px)
    spacing = np.asarray(mm_per_pixel, float).reshape(-1)
    has_spacing = np.isfinite(spacing) & (spacing > 0)
    if has_spacing.any():
        return (errors_px * np.where(has_spacing, spacing, np.nan)[:, None])[
            visible & has_spacing[:, None]], 'mm'
    return errors_px[visible], 'px'


def error_percentiles(values: np.ndarray, percentiles: Sequence[float] = (50, 90, 95)) -> dict:
    """{'p50': .., 'p90': .., 'p95': .., 'max': ..}; NaN for no values."""
    values = np.asarray(values, float)
    out = {f'p{q:g}': float(np.percentile(values, q)) if values.size else float('nan')
           for q in percentiles}
    out['max'] = float(values.max()) if values.size else float('nan')
    return out


def measurement_errors(truth: Sequence[Mapping[str, float]],
                       predicted: Sequence[Mapping[str, float]]) -> dict:
    """Prediction minus truth for every measurement both sides of an image have.

    `truth` and `predicted` hold one `compute_measurements` dict per image. Returns, in the order of
    MEASUREMENTS (the class is compared separately), {key: {'unit', 'n', 'MAE', 'mean_error',
    'max_abs_error'}}; mean_error is the signed bias, positive when predictions run larger.
    """
    out = {}
    for key, info in MEASUREMENTS.items():
        if key == 'skeletal_class':
            continue
        diffs = np.array([p[key] - t[key] for t, p in zip(truth, predicted)
                          if key in t and key in p], float)
        diffs = diffs[np.isfinite(diffs)]
        if diffs.size:
            out[key] = {'unit': info.unit, 'n': int(diffs.size),
                        'MAE': float(np.mean(np.abs(diffs))), 'mean_error': float(np.mean(diffs)),
                        'max_abs_error': float(np.max(np.abs(diffs)))}
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence],
                   align: Optional[str] = None) -> str:
    """GitHub-flavoured table; `align` has one 'l' or 'r' per column (default: l, then r's)."""
    align = align or 'l' + 'r' * (len(header) - 1)
    rule = ['---:' if a == 'r' else ':---' for a in align]
    lines = ['| ' + ' | '.join(map(str, header)) + ' |', '| ' + ' | '.join(rule) + ' |']
    lines += ['| ' + ' | '.join(map(str, row)) + ' |' for row in rows]
    return '\n'.join(lines)


# -- figures ---------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=120, layout='constrained')


def plot_per_landmark_errors(path: str, names: Sequence[str], values: Sequence[float], unit: str,
                             overall: float) -> None:
    """Horizontal bars of each landmark's MRE, largest at the top, with the overall MRE dashed."""
    values = np.asarray(values, float)
    order = np.argsort(np.where(np.isfinite(values), values, -np.inf))  # NaN (never seen) last
    fig = _figure(7.0, 1.2 + 0.3 * len(names))
    ax = fig.add_subplot()
    shown = np.nan_to_num(values[order])
    bars = ax.barh(np.arange(len(order)), shown, color='#4C72B0', height=0.7)
    ax.set_yticks(np.arange(len(order)), [f'{names[i]} ({i + 1})' for i in order])
    labels = ax.bar_label(bars, padding=3, fontsize=8,
                          labels=[f'{v:.2f}' if np.isfinite(v) else 'n/a' for v in values[order]])
    for label in labels:  # stays readable where the overall-MRE line crosses it
        label.set_bbox({'facecolor': 'white', 'edgecolor': 'none', 'pad': 0.5})
    if np.isfinite(overall):
        ax.axvline(overall, color='#C44E52', linestyle='--', linewidth=1.2,
                   label=f'overall MRE {overall:.2f} {unit}')
        ax.legend(loc='lower right', fontsize=9)
    ax.set_xlabel(f'mean radial error ({unit})')
    ax.set_xlim(0, max(shown.max(initial=0) * 1.15, 1e-6))
    ax.set_title('Mean radial error per landmark')
    ax.grid(axis='x', alpha=0.3)
    ax.set_axisbelow(True)
    fig.savefig(path)


def plot_error_cdf(path: str, values: np.ndarray, unit: str, sdr: Mapping[float, float]) -> None:
    """Cumulative share of landmarks within each error; dotted lines at the SDR radii."""
    values = np.sort(np.asarray(values, float))
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    if values.size:
        share = 100.0 * np.arange(1, values.size + 1) / values.size
        ax.step(np.concatenate([[0.0], values]), np.concatenate([[0.0], share]), where='post',
                color='#4C72B0', linewidth=1.6)
    lines = []
    for radius, percent in sorted(sdr.items()):
        ax.axvline(radius, color='#888888', linestyle=':', linewidth=1)
        ax.plot([radius], [percent], 'o', color='#C44E52', markersize=4)
        lines.append(f'{percent:5.1f}% within {radius:g} {unit}')
    if lines:  # one box rather than labels at the points, which collide when radii are close
        ax.text(0.98, 0.04, 'SDR\n' + '\n'.join(lines), transform=ax.transAxes, ha='right',
                va='bottom', fontsize=9, family='monospace',
                bbox={'boxstyle': 'round', 'facecolor': 'white', 'edgecolor': '#BBBBBB'})
    ax.set_xlim(0, values[-1] * 1.02 if values.size else 1.0)
    ax.set_ylim(0, 100)
    ax.set_xlabel(f'radial error ({unit})')
    ax.set_ylabel('landmarks within that error (%)')
    ax.set_title('Cumulative distribution of landmark errors')
    ax.grid(alpha=0.3)
    fig.savefig(path)


def plot_confusion_matrices(path: str, panels: Sequence[tuple[str, dict]]) -> None:
    """One heat map per (title, class_agreement result): true class down, predicted across."""
    fig = _figure(4.2 * len(panels), 4.0)
    for index, (title, agreement) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        matrix = np.asarray(agreement['confusion'])
        ax.imshow(matrix, cmap='Blues', vmin=0, vmax=max(int(matrix.max()), 1))
        labels = agreement['labels']
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel('predicted (from predicted landmarks)')
        ax.set_ylabel('true')
        accuracy = agreement['accuracy']
        ax.set_title(f'{title}\naccuracy {100 * accuracy:.1f}% (n={agreement["n"]})'
                     if accuracy is not None else f'{title}\nno images to compare', fontsize=10)
        threshold = matrix.max() / 2
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha='center', va='center', fontsize=12,
                    color='white' if count > threshold else 'black')
    fig.savefig(path)


def tile_images(images: Sequence[np.ndarray], columns: int = 4, tile_width: int = 512,
                gap: int = 8, background: int = 255) -> np.ndarray:
    """RGB pictures in a grid, each resized to `tile_width` wide (aspect kept), rows top-aligned."""
    tiles = []
    for image in images:
        height, width = image.shape[:2]
        size = (tile_width, max(1, round(height * tile_width / width)))
        interpolation = cv2.INTER_AREA if width > tile_width else cv2.INTER_CUBIC
        tiles.append(image if width == tile_width else
                     cv2.resize(image, size, interpolation=interpolation))
    rows = [tiles[start:start + columns] for start in range(0, len(tiles), columns)]
    columns = min(columns, len(tiles))
    heights = [max(t.shape[0] for t in row) for row in rows]
    canvas = np.full((sum(heights) + gap * (len(rows) + 1),
                      columns * tile_width + gap * (columns + 1), 3), background, np.uint8)
    y = gap
    for row, height in zip(rows, heights):
        for col, tile in enumerate(row):
            x = gap + col * (tile_width + gap)
            canvas[y:y + tile.shape[0], x:x + tile_width] = tile
        y += height + gap
    return canvas
