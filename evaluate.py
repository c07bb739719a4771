"""Evaluate a trained checkpoint on one split of a prepared dataset: numbers, tables and pictures.

    python evaluate.py --checkpoint work_dirs/cephalometric/best_MRE.pth
    python evaluate.py --checkpoint best_MRE.pth --data-root data/cephalometric --split val \
        --out-dir results/eval_val --overwrite

Every image of the split (default: test, the one neither training nor checkpoint selection saw) is
predicted with the whole image as the face box, as in training. Written to --out-dir (default
<checkpoint folder>/eval_<split>), all at once so a failed run leaves nothing half-written:
  metrics.json      every number below, machine-readable
  predictions.csv   one row per patient_id: predicted x, y of each landmark (image pixels)
  report.md         tables and pictures: MRE/SDR overall and per landmark, error distribution,
                    skeletal class agreement, measurement errors, worst cases
  *.png             per-landmark errors, error CDF, class confusion matrices, worst-case gallery
Errors are in mm when the dataset knows the pixel spacing, in pixels otherwise.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import os.path as osp
import shutil
import sys
import uuid

import numpy as np

from cephalometric import report
from cephalometric.drawing import draw_comparison, save_image
from cephalometric.errors import UserError, run_cli
from cephalometric.images import read_rgb
from cephalometric.measurements import MEASUREMENTS, compute_measurements
from cephalometric.metrics import radial_errors, summarize_radial_errors
from cephalometric.prepared import load_split, mean_shape_baseline

SPLITS = ('train', 'val', 'test')

SPLIT_NOTES = {
    'test': 'The test split is held out: training never saw it and the checkpoint was not chosen '
            'on it, so these figures estimate accuracy on new patients.',
    'val': 'The val split chose the best checkpoint, so these figures are slightly optimistic; '
           'report the test split.',
    'train': 'The train split is what the model was fitted to: these figures are optimistic and '
             'only useful to spot under- or over-fitting.',
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--checkpoint', required=True, help='.pth written by training')
    parser.add_argument('--data-root', default='data/cephalometric',
                        help='folder written by prepare_cephalometric_data.py')
    parser.add_argument('--split', default='test', help='train, val or test (default test)')
    parser.add_argument('--out-dir',
                        help='output folder (default <checkpoint folder>/eval_<split>)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out-dir')
    parser.add_argument('--device', default='auto', help='auto (CUDA when present), cpu or cuda')
    parser.add_argument('--batch-size', type=int, default=8, help='images per forward pass')
    parser.add_argument('--worst', type=int, default=8,
                        help='how many highest-error images to show (default 8; 0 for none)')
    parser.add_argument('--class-thresholds', default='0,4', metavar='LOW,HIGH',
                        help='ANB (deg) bounds of Class I; above is II, below is III (default 0,4)')
    return parser.parse_args(argv)


def parse_thresholds(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) != 2 or not all(map(math.isfinite, values)) or values[0] > values[1]:
        raise UserError(f'--class-thresholds must be LOW,HIGH in degrees with LOW <= HIGH, '
                        f'e.g. 0,4; got {text!r}')
    return values[0], values[1]


def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse before any work is done, rather than after minutes of prediction."""
    if not osp.lexists(out_dir):
        return
    if osp.islink(out_dir) or not osp.isdir(out_dir):
        raise UserError(f'--out-dir {out_dir} exists and is not a folder; choose another --out-dir')
    if not overwrite:
        raise UserError(f'{out_dir} already exists; pass --overwrite to replace it or choose '
                        'another --out-dir')


def predict_split(predictor, image_paths, batch_size: int) -> np.ndarray:
    """(N, K, 2) predicted pixels; images are read one batch at a time to bound memory."""
    points = []
    for start in range(0, len(image_paths), batch_size):
        images = [read_rgb(p) for p in image_paths[start:start + batch_size]]
        points += [p.keypoints for p in predictor(images, batch_size=batch_size)]
    return np.stack(points)


def per_image_mre(errors_px: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Mean error of each image's annotated landmarks, px; NaN for an image with none."""
    valid = visible & np.isfinite(errors_px)
    counts = valid.sum(axis=1)
    totals = np.where(valid, errors_px, 0.0).sum(axis=1)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def evaluate(split, predicted: np.ndarray, thresholds, baseline) -> tuple[np.ndarray, dict]:
    """The landmark errors behind the headline MRE, in its unit (for the distribution plot), and
    every number of the report keyed for metrics.json (NaN where undefined)."""
    names = split.names
    errors = radial_errors(predicted, split.keypoints)
    summary = summarize_radial_errors(errors, split.visible, split.mm_per_pixel, names)
    unit = 'mm' if 'MRE_mm' in summary else 'px'
    values, _ = report.error_values(errors, split.visible, split.mm_per_pixel)

    image_mre_px = per_image_mre(errors, split.visible)
    image_mre_mm = image_mre_px * split.mm_per_pixel

    spacing = [float(s) if np.isfinite(s) and s > 0 else None for s in split.mm_per_pixel]
    truth_m = [compute_measurements(names, k, s, thresholds)
               for k, s in zip(split.keypoints, spacing)]
    pred_m = [compute_measurements(names, k, s, thresholds) for k, s in zip(predicted, spacing)]
    truth_class = [m.get('skeletal_class') for m in truth_m]
    pred_class = [m.get('skeletal_class') for m in pred_m]
    recorded = split.skeletal_class
    has_recorded = any(c is not None for c in recorded)

    return values, {
        'num_images': len(split.patient_ids),
        'num_landmarks': len(names),
        'unit': unit,
        'overall': {k: v for k, v in summary.items() if '/' not in k},
        'error_percentiles': {'unit': unit, **report.error_percentiles(values)},
        'per_landmark': {name: {'MRE': summary[f'MRE/{name}'],
                                'MRE_mm': summary.get(f'MRE_mm/{name}')} for name in names},
        'per_image': [{'patient_id': pid, 'MRE': px, 'MRE_mm': mm}
                      for pid, px, mm in zip(split.patient_ids, image_mre_px, image_mre_mm)],
        'skeletal_class': {
            'class_thresholds_deg': list(thresholds),
            'predicted_vs_true_landmarks': report.class_agreement(truth_class, pred_class),
            'predicted_vs_recorded': (report.class_agreement(recorded, pred_class)
                                      if has_recorded else None),
            # How far the recorded labels follow ANB at all: the ceiling for the prediction.
            'true_landmarks_vs_recorded': (report.class_agreement(recorded, truth_class)
                                           if has_recorded else None),
        },
        'measurements': report.measurement_errors(truth_m, pred_m),
        'baseline_mean_shape': baseline,
    }


def worst_cases(metrics: dict, split, count: int) -> list[int]:
    """Indices of the `count` images with the highest per-image MRE in the report's unit.

    Also records them as metrics['worst_cases']. In mm, images without a spacing are not ranked.
    """
    key = 'MRE_mm' if metrics['unit'] == 'mm' else 'MRE'
    ranked = np.array([image[key] for image in metrics['per_image']], float)
    order = np.argsort(-np.where(np.isfinite(ranked), ranked, -np.inf), kind='stable')
    chosen = [int(i) for i in order[:count] if np.isfinite(ranked[i])]
    metrics['worst_cases'] = [{'patient_id': split.patient_ids[i], 'MRE': float(ranked[i]),
                               'unit': metrics['unit']} for i in chosen]
    return chosen


def json_ready(value):
    """NaN/inf -> null and numpy scalars -> Python, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


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
    report.plot_per_landmark_errors(osp.join(folder, files['per_landmark']), names,
                                    [metrics['per_landmark'][n][key] for n in names], unit,
                                    metrics['overall'][key])
    sdr = {float(k[len('SDR@'):-len(unit)]): v for k, v in metrics['overall'].items()
           if k.startswith('SDR@')}
    report.plot_error_cdf(osp.join(folder, files['cdf']), values, unit, sdr)
    classes = metrics['skeletal_class']
    panels = [('vs class from true landmarks', classes['predicted_vs_true_landmarks'])]
    if classes['predicted_vs_recorded'] is not None:
        panels.append(('vs recorded skeletal_class', classes['predicted_vs_recorded']))
    report.plot_confusion_matrices(osp.join(folder, files['confusion']), panels)
    if worst:
        tiles = []
        for rank, (i, case) in enumerate(zip(worst, metrics['worst_cases']), start=1):
            title = f'{rank}. {case["patient_id"]}   MRE {case["MRE"]:.2f} {unit}'
            tiles.append(draw_comparison(read_rgb(split.image_paths[i]), names,
                                         split.keypoints[i], predicted[i], title=title))
        files['worst'] = 'worst_cases.png'
        save_image(osp.join(folder, files['worst']), report.tile_images(tiles, columns=4))
    return files


def _fmt(value, digits: int = 2) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


def _percent(fraction) -> str:
    return 'n/a' if fraction is None else f'{100 * fraction:.1f}%'


def _confusion_table(agreement: dict) -> str:
    labels = agreement['labels']
    rows = [[f'**{label}**'] + row for label, row in zip(labels, agreement['confusion'])]
    return report.markdown_table(['true \\ predicted'] + labels, rows)


def render_report(metrics: dict, files: dict) -> str:
    markdown_table = report.markdown_table
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


def publish(staging: str, out_dir: str) -> None:
    """Move the finished folder into place, replacing an old one (--overwrite was checked)."""
    if osp.isdir(out_dir):
        retired = staging + '.old'
        os.rename(out_dir, retired)
        try:
            os.rename(staging, out_dir)
        except OSError:
            os.rename(retired, out_dir)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, out_dir)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.split not in SPLITS:
        raise UserError(f'--split must be one of {", ".join(SPLITS)}, got {args.split!r}')
    if args.batch_size < 1:
        raise UserError(f'--batch-size must be at least 1, got {args.batch_size}')
    if args.worst < 0:
        raise UserError(f'--worst must be 0 or more, got {args.worst}')
    thresholds = parse_thresholds(args.class_thresholds)

    split = load_split(args.data_root, args.split)
    if not split.patient_ids:
        raise UserError(f'the {args.split} split of {args.data_root} has no images; prepare the '
                        'dataset with a non-zero fraction for it')
    out_dir = osp.normpath(args.out_dir or osp.join(osp.dirname(osp.abspath(args.checkpoint)),
                                                    f'eval_{args.split}'))
    check_out_dir(out_dir, args.overwrite)

    # torch + MMPose take seconds to import: only once the inputs are known to be good.
    from cephalometric.predictor import LandmarkPredictor

    predictor = LandmarkPredictor(args.checkpoint, device=args.device)
    if list(predictor.names) != list(split.names):
        raise UserError(f'the checkpoint predicts {len(predictor.names)} landmarks '
                        f'({", ".join(predictor.names[:3])}, ...) but {args.data_root} has '
                        f'{len(split.names)} ({", ".join(split.names[:3])}, ...); evaluate on the '
                        'dataset the model was trained on')
    print(f'predicting {len(split.patient_ids)} images of the {args.split} split '
          f'on {predictor.device}')
    predicted = predict_split(predictor, split.image_paths, args.batch_size)

    # The baseline needs only the train annotations (their mean shape), never the train images.
    has_train = osp.isfile(osp.join(args.data_root, 'annotations', 'train.json'))
    baseline = mean_shape_baseline(args.data_root, args.split) if has_train else None
    values, numbers = evaluate(split, predicted, thresholds, baseline)
    metrics = {'split': args.split, 'checkpoint': osp.abspath(args.checkpoint),
               'data_root': osp.abspath(args.data_root), **numbers}
    worst = worst_cases(metrics, split, args.worst)

    parent = osp.dirname(osp.abspath(out_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        # Not tempfile.mkdtemp: its folder is private (0700) and would stay so once renamed.
        staging = osp.join(parent, f'.{osp.basename(out_dir)}.tmp-{uuid.uuid4().hex[:12]}')
        os.mkdir(staging)
    except OSError as error:
        raise UserError(f'cannot write to {parent}: {error.strerror or error}; choose another '
                        '--out-dir') from None
    try:
        files = write_figures(staging, metrics, values, split, predicted, worst)
        write_predictions_csv(osp.join(staging, 'predictions.csv'), split, predicted)
        with open(osp.join(staging, 'metrics.json'), 'w') as stream:
            json.dump(json_ready(metrics), stream, indent=2, allow_nan=False)
        with open(osp.join(staging, 'report.md'), 'w') as stream:
            stream.write(render_report(metrics, files))
        publish(staging, out_dir)
    except OSError as error:
        raise UserError(f'cannot write {out_dir}: {error.strerror or error}') from None
    finally:
        if osp.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)

    unit, overall = metrics['unit'], metrics['overall']
    key = 'MRE_mm' if unit == 'mm' else 'MRE'
    sdr = ', '.join(f'{k} {v:.1f}%' for k, v in overall.items() if k.startswith('SDR@'))
    print(f'{args.split}: MRE {overall[key]:.2f} {unit} over {metrics["num_images"]} images; {sdr}')
    print(f'report: {osp.join(out_dir, "report.md")}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
