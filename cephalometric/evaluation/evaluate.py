"""Evaluate a trained checkpoint on one split of a prepared dataset: numbers, tables and pictures
(evaluate.py).

    python evaluate.py --checkpoint work_dirs/cephalometric/best_MRE.pth
    python evaluate.py --checkpoint best_MRE.pth --data-root data/cephalometric --split val \
        --out-dir results/eval_val --overwrite

Every image of the split (default: test, the one neither training nor checkpoint selection saw) is
predicted with the whole image as the face box, as in training (--bbox full; --bbox auto finds the
face as inference.py does). --robustness adds the framing check: every image also pasted into a
canvas 1.5x, 2x and 3x its size on a plain and a cluttered background, and mirrored, each predicted
with automatic framing and with the whole image as the box. Written to --out-dir (default
<checkpoint folder>/eval_<split>), all at once so a failed run leaves nothing half-written;
--overwrite replaces only a folder this project wrote, never the data or the checkpoint's folder:
  metrics.json      every number below, machine-readable
  predictions.csv   one row per patient_id: predicted x, y of each landmark (image pixels)
  report.md         tables and pictures: MRE/SDR overall and per landmark, error distribution,
                    skeletal class agreement, measurement errors, worst cases
  *.png             per-landmark errors, error CDF, class confusion matrices, worst-case gallery
Errors are in mm when the dataset knows the pixel spacing, in pixels otherwise.
"""
from __future__ import annotations

import argparse
import math
import os.path as osp
import sys

import numpy as np

from cephalometric.cli import FRAMING_MODES, add_options, check_options
from cephalometric.data.depth import match_depth_files
from cephalometric.data.reader import SPLITS, load_split, mean_shape_baseline, recreate_hint
from cephalometric.errors import UserError
from cephalometric.evaluation import report
from cephalometric.evaluation.calibration import confidence_numbers, plot_reliability
from cephalometric.evaluation.statistics import (
    evaluate,
    framing_robustness,
    predict_split_all,
    worst_cases,
)
from cephalometric.outputs import (
    MARKER,
    LegacyLayout,
    check_output_folder,
    staged_output_folder,
)
from cephalometric.prediction.results import json_text

# Evaluation folders from before the marker listed its files (0.3): these, and nothing else.
LEGACY_LAYOUTS = (LegacyLayout(MARKER, (), ('metrics.json', 'predictions.csv', 'report.md',
                                           '*.png')),)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='evaluate.py', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    add_options(parser, 'checkpoint', required=('checkpoint',))
    parser.add_argument('--data-root', default='data/cephalometric',
                        help='folder written by prepare_cephalometric_data.py')
    parser.add_argument('--split', default='test', help='train, val or test (default test)')
    parser.add_argument('--out-dir',
                        help='output folder (default <checkpoint folder>/eval_<split>)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out-dir (only one this project wrote)')
    add_options(parser, 'device', 'backend', 'batch_size', 'depth_path', 'bbox', 'no_refine',
                defaults=dict(bbox='full'),
                help=dict(depth_path='RGB-D models: depth maps named like the images '
                          '(<stem>.npy); default: those the RGB-D dataset keeps beside its images',
                          bbox='face box: full (the whole image, as training validates; default) '
                          'or auto (found in the photograph, as inference.py does)'))
    parser.add_argument('--robustness', action='store_true',
                        help='also measure automatic framing on wider and mirrored photographs '
                        'made from the split (see above)')
    parser.add_argument('--worst', type=int, default=8,
                        help='how many highest-error images to show (default 8; 0 for none)')
    parser.add_argument('--class-thresholds', default='0,4', metavar='LOW,HIGH',
                        help='ANB (deg) bounds of Class I; above is II, below is III (default 0,4)')
    args = check_options(parser.parse_args(argv))
    if args.bbox not in FRAMING_MODES:
        raise UserError(f'--bbox takes {" or ".join(FRAMING_MODES)} here (a split has many '
                        f'images, so one box fits none), got {",".join(map(str, args.bbox))}')
    return args


def parse_thresholds(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) != 2 or not all(map(math.isfinite, values)) or values[0] > values[1]:
        raise UserError(f'--class-thresholds must be LOW,HIGH in degrees with LOW <= HIGH, '
                        f'e.g. 0,4; got {text!r}')
    return values[0], values[1]


def main(argv=None) -> int:
    args = parse_args(argv)
    thresholds = check_args(args)
    split = load_split(args.data_root, args.split)
    if not split.patient_ids:
        raise UserError(f'the {args.split} split of {args.data_root} has no images; prepare the '
                        'dataset with a non-zero fraction for it')
    checkpoint_folder = osp.dirname(osp.abspath(args.checkpoint))
    out_dir = osp.normpath(args.out_dir or osp.join(checkpoint_folder, f'eval_{args.split}'))
    check_output_folder(out_dir, overwrite=args.overwrite,
                        protected=[args.data_root, checkpoint_folder, args.checkpoint,
                                   args.depth_path], legacy_markers=LEGACY_LAYOUTS)

    # torch + MMPose take seconds to import: only once the inputs are known to be good.
    from cephalometric.prediction.predictor import LandmarkPredictor

    predictor = LandmarkPredictor(args.checkpoint, device=args.device, backend=args.backend,
                                  refine=not args.no_refine)
    if list(predictor.names) != list(split.names):
        raise UserError(f'the checkpoint predicts {len(predictor.names)} landmarks '
                        f'({", ".join(predictor.names[:3])}, ...) but {args.data_root} has '
                        f'{len(split.names)} ({", ".join(split.names[:3])}, ...); evaluate on the '
                        'dataset the model was trained on')
    print(f'predicting {len(split.patient_ids)} images of the {args.split} split '
          f'on {predictor.device}')
    depth_paths = split_depth_paths(args, split, getattr(predictor, 'needs_depth', False))
    predictions = predict_split_all(predictor, split.image_paths, args.batch_size, depth_paths,
                                    args.bbox)
    predicted = np.stack([p.keypoints for p in predictions])
    metrics, values, worst = measure(args, split, predicted, thresholds, predictor)
    metrics['confidence'] = confidence_numbers(split, predictions, thresholds)
    with staged_output_folder(out_dir, tool='evaluate') as staging:
        files = report.write_figures(str(staging), metrics, values, split, predicted, worst)
        if metrics['confidence'] and metrics['confidence']['class_reliability']:
            files['reliability'] = 'class_reliability.png'
            plot_reliability(str(staging / files['reliability']),
                             metrics['confidence']['class_reliability'])
        report.write_predictions_csv(str(staging / 'predictions.csv'), split, predicted)
        (staging / 'metrics.json').write_text(json_text(metrics), encoding='utf-8')
        (staging / 'report.md').write_text(report.render_report(metrics, files),
                                           encoding='utf-8')

    unit, overall = metrics['unit'], metrics['overall']
    key = 'MRE_mm' if unit == 'mm' else 'MRE'
    sdr = ', '.join(f'{k} {v:.1f}%' for k, v in overall.items() if k.startswith('SDR@'))
    print(f'{args.split}: MRE {overall[key]:.2f} {unit} over {metrics["num_images"]} images; {sdr}')
    print(f'report: {osp.join(out_dir, "report.md")}')
    return 0


def check_args(args) -> tuple[float, float]:
    """The options that need no data or model; returns the class thresholds."""
    if args.split not in SPLITS:
        raise UserError(f'--split must be one of {", ".join(SPLITS)}, got {args.split!r}')
    if args.worst < 0:
        raise UserError(f'--worst must be 0 or more, got {args.worst}')
    thresholds = parse_thresholds(args.class_thresholds)
    if not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint not found: {args.checkpoint}; pass the .pth written by '
                        'training, e.g. work_dirs/cephalometric/best_MRE.pth')
    return thresholds


def split_depth_paths(args, split, needs_depth: bool):
    """Each image's depth map for an RGB-D model (--depth-path, else the dataset's own), else
    None; one line when any is missing, before anything is predicted."""
    if not needs_depth:
        if args.depth_path:
            print('note: this model takes no depth map; --depth-path is ignored', file=sys.stderr)
        return None
    depth_paths = (match_depth_files(split.image_paths, args.depth_path) if args.depth_path
                   else split.depth_paths)
    if depth_paths is None:
        raise UserError(f'this model is RGB-D but {args.data_root} keeps no depth maps; pass '
                        '--depth-path FOLDER (<stem>.npy per image) or prepare the data with '
                        '--image-source rgbd')
    missing = [p for p in depth_paths if not osp.isfile(p)]
    if missing:
        raise UserError(f'depth map {missing[0]} is missing ({len(missing)} in all); '
                        f'{recreate_hint(args.data_root)}')
    if args.robustness:
        raise UserError('--robustness builds wider photographs without depth maps; run it with an '
                        'RGB or depth model, not an RGB-D one')
    return depth_paths


def measure(args, split, predicted, thresholds, predictor) -> tuple:
    """(metrics for metrics.json, per-image values for the figures, worst-case indices)."""
    # The baseline needs only the train annotations (their mean shape), never the train images.
    has_train = osp.isfile(osp.join(args.data_root, 'annotations', 'train.json'))
    baseline = mean_shape_baseline(args.data_root, args.split) if has_train else None
    values, numbers = evaluate(split, predicted, thresholds, baseline)
    metrics = {'split': args.split, 'checkpoint': osp.abspath(args.checkpoint),
               'data_root': osp.abspath(args.data_root), **numbers}
    worst, metrics['worst_cases'] = worst_cases(metrics, split, args.worst)
    metrics['bbox'] = args.bbox
    if args.robustness:
        print(f'framing robustness: {len(split.patient_ids)} images x 8 variants x 2 ways')
        metrics['robustness'] = framing_robustness(predictor, split)
    return metrics, values, worst
