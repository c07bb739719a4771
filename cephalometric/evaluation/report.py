"""Rendering an evaluation: the markdown report, its tables and its figures (no numbers computed).

`render_report` turns the metrics dict of `evaluation.statistics` into report.md; `write_figures`
draws the pictures it links. Figures use matplotlib's object API (Figure, saved through the Agg
renderer), not pyplot, so they work without a display and leave no global state behind.
"""
from __future__ import annotations

import csv
import math
import os.path as osp
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from cephalometric.data.images import read_rgb
from cephalometric.drawing import draw_comparison, save_image
from cephalometric.measurements import MEASUREMENTS


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


SPLIT_NOTES = {
    'test': 'The test split is held out: training never saw it and the checkpoint was not chosen '
            'on it, so these figures estimate accuracy on new patients.',
    'val': 'The val split chose the best checkpoint, so these figures are slightly optimistic; '
           'report the test split.',
    'train': 'The train split is what the model was fitted to: these figures are optimistic and '
             'only useful to spot under- or over-fitting.',
}


def write_predictions_csv(path: str, split, predicted: np.ndarray) -> None:
    with open(path, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['patient_id'] + [f'{n}_{axis}' for n in split.names for axis in 'xy'])
        for pid, points in zip(split.patient_ids, predicted):
            writer.writerow([pid] + [f'{v:.3f}' for v in points.reshape(-1)])


def write_figures(folder: str, metrics: dict, values: np.ndarray, split, predicted: np.ndarray,
                  worst: list[int]) -> dict:
    """The report's pictures; returns {role: file name} for those written."""
    unit, names = metrics['unit'], split.names
    key = 'MRE_mm' if unit == 'mm' else 'MRE'
    files = {'per_landmark': 'per_landmark_errors.png', 'cdf': 'error_cdf.png',
             'confusion': 'class_confusion.png'}
    plot_per_landmark_errors(osp.join(folder, files['per_landmark']), names,
                                    [metrics['per_landmark'][n][key] for n in names], unit,
                                    metrics['overall'][key])
    sdr = {float(k[len('SDR@'):-len(unit)]): v for k, v in metrics['overall'].items()
           if k.startswith('SDR@')}
    plot_error_cdf(osp.join(folder, files['cdf']), values, unit, sdr)
    classes = metrics['skeletal_class']
    panels = [('vs class from true landmarks', classes['predicted_vs_true_landmarks'])]
    if classes['predicted_vs_recorded'] is not None:
        panels.append(('vs recorded skeletal_class', classes['predicted_vs_recorded']))
    plot_confusion_matrices(osp.join(folder, files['confusion']), panels)
    if worst:
        tiles = []
        for rank, (i, case) in enumerate(zip(worst, metrics['worst_cases']), start=1):
            title = f'{rank}. {case["patient_id"]}   MRE {case["MRE"]:.2f} {unit}'
            tiles.append(draw_comparison(read_rgb(split.image_paths[i]), names,
                                         split.keypoints[i], predicted[i], title=title))
        files['worst'] = 'worst_cases.png'
        save_image(osp.join(folder, files['worst']), tile_images(tiles, columns=4))
    return files


def _fmt(value, digits: int = 2) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


def _percent(fraction) -> str:
    return 'n/a' if fraction is None else f'{100 * fraction:.1f}%'


def _confusion_table(agreement: dict) -> str:
    labels = agreement['labels']
    rows = [[f'**{label}**'] + row for label, row in zip(labels, agreement['confusion'])]
    return markdown_table(['true \\ predicted'] + labels, rows)


def render_report(metrics: dict, files: dict) -> str:
    unit, overall = metrics['unit'], metrics['overall']
    mre_key, sd_key = ('MRE_mm', 'SD_mm') if unit == 'mm' else ('MRE', 'SD')
    split = metrics['split']
    out = [f'# Landmark evaluation: {split} split', '',
           f'- checkpoint: `{metrics["checkpoint"]}`',
           f'- data: `{metrics["data_root"]}`, **{split}** split, {metrics["num_images"]} images, '
           f'{metrics["num_landmarks"]} landmarks',
           f'- {SPLIT_NOTES[split]}']
    if unit == 'px':
        out.append('- The dataset has no pixel spacing, so errors are in image **pixels**; '
                   'prepare it with a spacing (--mm-per-pixel, a spacing column or --ruler-json) '
                   'to get millimetres.')
    else:
        out.append('- Errors in **mm** use each image\'s pixel spacing; images without one count '
                   'in the pixel figures only.')

    rows = [['MRE', f'{_fmt(overall[mre_key])} {unit}'], ['SD', f'{_fmt(overall[sd_key])} {unit}']]
    rows += [[k, f'{_fmt(v, 1)}%'] for k, v in overall.items() if k.startswith('SDR@')]
    percentiles = metrics['error_percentiles']
    rows += [[f'{k[1:]}th percentile' if k != 'max' else 'largest error', f'{_fmt(v)} {unit}']
             for k, v in percentiles.items() if k != 'unit']
    if unit == 'mm':
        rows.append(['MRE (pixels)', f'{_fmt(overall["MRE"])} px'])
    baseline = metrics['baseline_mean_shape']
    if baseline is not None:
        rows.append(['mean-shape baseline MRE', f'{_fmt(baseline.get(mre_key))} {unit}'])
    out += ['', '## Overall', '', markdown_table(['', 'value'], rows), '',
            'SDR@r: share of landmarks within r of the truth. Mean-shape baseline: the average '
            'landmark positions of the train annotations placed on every image; a model must beat '
            'it to have learnt anything about the patient.' if baseline is not None else
            'SDR@r: share of landmarks within r of the truth. (No train annotations found, so no '
            'mean-shape baseline.)']

    names = list(metrics['per_landmark'])
    header = ['#', 'landmark', f'MRE ({unit})'] + (['MRE (px)'] if unit == 'mm' else [])
    rows = []
    for number, name in enumerate(names, start=1):
        entry = metrics['per_landmark'][name]
        rows.append([number, name, _fmt(entry['MRE_mm'] if unit == 'mm' else entry['MRE'])]
                    + ([_fmt(entry['MRE'])] if unit == 'mm' else []))
    out += ['', '## Per landmark', '',
            f'![Mean radial error per landmark]({files["per_landmark"]})', '',
            markdown_table(header, rows, 'rlrr' if unit == 'mm' else 'rlr'),
            '', '## Error distribution', '', f'![Cumulative error distribution]({files["cdf"]})']

    classes = metrics['skeletal_class']
    low, high = classes['class_thresholds_deg']
    versus_truth = classes['predicted_vs_true_landmarks']
    out += ['', '## Skeletal class', '',
            f'Class from ANB: Class I for {low:g} <= ANB <= {high:g} deg, Class II above, '
            'Class III below. Predicted = from the predicted landmarks.', '',
            f'![Class confusion matrices]({files["confusion"]})', '',
            f'**Against the class from the true landmarks**: accuracy '
            f'{_percent(versus_truth["accuracy"])} over {versus_truth["n"]} images.', '',
            _confusion_table(versus_truth)]
    recorded = classes['predicted_vs_recorded']
    if recorded is None:
        out += ['', 'The dataset has no recorded skeletal_class to compare with.']
    else:
        ceiling = classes['true_landmarks_vs_recorded']
        out += ['', '**Against the recorded skeletal_class**: accuracy '
                f'{_percent(recorded["accuracy"])} over {recorded["n"]} images (the true landmarks '
                f'themselves agree with it for {_percent(ceiling["accuracy"])}).', '',
                _confusion_table(recorded)]

    errors = metrics['measurements']
    headline = [f'{k} {_fmt(errors[k]["MAE"])}' for k in ('SNA', 'SNB', 'ANB') if k in errors]
    rows = [[key, MEASUREMENTS[key].unit, e['n'], _fmt(e['MAE']), _fmt(e['mean_error']),
             _fmt(e['max_abs_error'])]
            for key, e in errors.items()
            # The pixel twin of a distance adds nothing once its mm version is there.
            if not (key.endswith('_px') and key[:-3] + '_mm' in errors)]
    out += ['', '## Measurements', '',
            'Each measurement from the predicted landmarks minus the same from the true landmarks. '
            'Bias: the mean signed error (positive: predicted larger).', '']
    if headline:
        out += [f'Mean absolute error (deg): {", ".join(headline)}.', '']
    out += [markdown_table(['measurement', 'unit', 'n', 'mean abs error', 'bias', 'max abs error'],
                           rows, 'llrrrr') if rows else 'No measurement could be computed.']

    out += robustness_section(metrics.get('robustness'))
    out += confidence_section(metrics.get('confidence'), files)

    worst = metrics['worst_cases']
    out += ['', '## Worst cases', '']
    if worst:
        out += [f'The {len(worst)} images with the highest mean radial error. Green circles: '
                'truth; red crosses: prediction; yellow lines join each pair; numbers are the '
                'landmarks\' rows in the per-landmark table.', '',
                markdown_table(['rank', 'patient_id', f'MRE ({unit})'],
                               [[r, c['patient_id'], _fmt(c['MRE'])]
                                for r, c in enumerate(worst, start=1)], 'rlr'),
                '', f'![Worst cases]({files["worst"]})']
    else:
        out.append('None shown (--worst 0).')
    return '\n'.join(out) + '\n'


def confidence_section(confidence, files: dict) -> list:
    """How well the stated errors and class probabilities held (nothing without a calibration)."""
    if not confidence:
        return ['', '## Confidence', '', 'No error calibration for these predictions: the '
                'checkpoint has none (trained before it existed; train it again to have one), or '
                'it was measured with the refinement model that --no-refine skipped.']
    def interval(key, shown):   # the figure's 90% bootstrap interval over the images
        bounds = confidence.get(f'{key}_interval')
        return shown(confidence[key]) + ('' if not bounds else
                                         f' [{shown(bounds[0])}, {shown(bounds[1])}]')
    rows = [['Spearman, expected vs actual error (each landmark of each image)',
             interval('spearman_landmarks', _fmt)],
            ['Spearman, expected vs actual mean error per image',
             interval('spearman_images', _fmt)],
            ['consistency of the per-image error (split-half Spearman; the most a per-image '
             'ranking can show)', _fmt(confidence['images_split_half'])],
            ['true positions inside the 90% radius', interval('radius90_coverage', _percent)],
            ['true ANB inside the 90% interval', _percent(confidence['anb_interval_coverage'])],
            ['worst 10% of images among the top 20% by expected error',
             _percent(confidence['worst10_in_top20'])],
            ['Brier score of the class probabilities (0 best, 0.67 a uniform guess)',
             _fmt(confidence['class_brier'], 3)]]
    out = ['', '## Confidence', '',
           f'Each landmark\'s expected error and 90% radius come from the error calibration in '
           f'the checkpoint (measured on the validation split after training); '
           f'{confidence["num_images"]} images. In brackets: the 90% interval of a figure over '
           f'resamples of these images (how much another set like them could move it).', '',
           markdown_table(['', 'value'], rows, 'lr')]
    if 'reliability' in files:
        out += ['', f'![Reliability of the class probabilities]({files["reliability"]})']
    return out


def robustness_section(robustness) -> list:
    """The framing table of `evaluate.py --robustness` (nothing without it)."""
    if not robustness:
        return []
    table = robustness['MRE']
    crop = table['crop']['auto']
    rows = [[name, _fmt(values['auto']), f'{values["auto"] / crop:.2f}x', _fmt(values['full'])]
            for name, values in table.items()]
    seconds = robustness['seconds_per_image']
    return ['', '## Framing robustness', '',
            f'The {robustness["num_images"]} images pasted at a random place into a larger plain '
            'or cluttered canvas, and mirrored; MRE in pixels. "auto" finds the face box and the '
            'facing direction (inference.py\'s default); "full" takes the whole picture as the '
            'face box (`--bbox full`).', '',
            markdown_table(['photograph', 'MRE auto (px)', 'vs crop', 'MRE full (px)'], rows,
                           'lrrr'), '',
            f'Time per photograph: {seconds["auto"] * 1000:.0f} ms with automatic framing, '
            f'{seconds["full"] * 1000:.0f} ms with the whole image as the box.']
