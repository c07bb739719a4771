"""Detect cephalometric landmarks on new photographs and draw them.

    python inference.py --checkpoint work_dirs/cephalometric/best_MRE.pth \
        --img-path patient.jpg --out-file patient_landmarks.jpg
    python inference.py --checkpoint best_MRE.pth --img-path photos/ --out-dir results/ \
        --json results/landmarks.json --csv results/landmarks.csv --mm-per-pixel 0.1

The model was trained on face crops: give the face region with --bbox x,y,w,h when the photograph
shows more than the face (head and shoulders, background); without it the whole image is used.
Only the checkpoint is needed: the landmark names and the preprocessing travel inside it.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

from cephalometric.errors import UserError, run_cli
from cephalometric.images import find_images, read_rgb
from cephalometric.results import image_record, write_csv, write_json


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoint', required=True, help='.pth written by training')
    parser.add_argument('--img-path', required=True, help='an image, a folder or a glob pattern')
    parser.add_argument('--out-file', help='annotated picture for a single image')
    parser.add_argument('--out-dir', help='folder for annotated pictures (<image name>_landmarks.jpg)')
    parser.add_argument('--bbox', help='face region x,y,w,h in pixels (default: whole image)')
    parser.add_argument('--json', help='write landmarks and measurements as JSON')
    parser.add_argument('--csv', help='write one row per image as CSV')
    parser.add_argument('--mm-per-pixel', type=float,
                        help='pixel spacing, to also give distances in mm')
    parser.add_argument('--score-threshold', type=float, default=0.3,
                        help='landmarks scoring below this are marked for review (default 0.3)')
    parser.add_argument('--device', default='auto', help='auto (CUDA when present), cpu or cuda')
    parser.add_argument('--batch-size', type=int, default=8, help='images per forward pass')
    parser.add_argument('--backend', choices=['auto', 'pytorch', 'onnxruntime'], default='auto',
                        help='auto: onnxruntime for a .onnx from export_onnx.py (fastest on a CPU), '
                        'pytorch for a .pth')
    parser.add_argument('--no-draw', action='store_true', help='skip the pictures')
    return parser.parse_args(argv)


def parse_bbox(text: str | None):
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise UserError(f'--bbox must be x,y,w,h with positive width and height, got {text!r}')
    return tuple(values)


def output_paths(images: list[str], args) -> list[str | None]:
    if args.no_draw:
        return [None] * len(images)
    if args.out_file:
        if len(images) > 1:
            raise UserError(f'--out-file takes one image but {args.img_path} matched {len(images)}; '
                            'use --out-dir for several')
        return [args.out_file]
    out_dir = args.out_dir or 'work_dirs/inference'
    stems = [osp.splitext(osp.basename(p))[0] for p in images]
    return [osp.join(out_dir, f'{stem}_landmarks.jpg') for stem in stems]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f'--batch-size must be at least 1, got {args.batch_size}')
    images = find_images(args.img_path)
    outputs = output_paths(images, args)
    bbox = parse_bbox(args.bbox)

    from cephalometric.drawing import draw_landmarks, save_image
    from cephalometric.measurements import compute_measurements
    from cephalometric.predictor import LandmarkPredictor

    predictor = LandmarkPredictor(args.checkpoint, device=args.device, backend=args.backend)
    records = []
    for start in range(0, len(images), args.batch_size):
        paths = images[start:start + args.batch_size]
        pictures = [read_rgb(p) for p in paths]
        predictions = predictor(pictures, [bbox] * len(paths), batch_size=args.batch_size)
        for path, picture, prediction, out in zip(paths, pictures, predictions,
                                                  outputs[start:start + args.batch_size]):
            measurements = compute_measurements(prediction.names, prediction.keypoints,
                                                mm_per_pixel=args.mm_per_pixel)
            records.append(image_record(path, prediction, measurements,
                                         score_threshold=args.score_threshold,
                                         picture=out))
            if out is not None:
                os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
                save_image(out, draw_landmarks(picture, prediction.names, prediction.keypoints,
                                               prediction.scores, measurements,
                                               score_threshold=args.score_threshold))
                print(f'{path} -> {out}')
    if args.json:
        write_json(args.json, records[0] if len(records) == 1 else records)
        print(f'landmarks: {args.json}')
    if args.csv:
        write_csv(args.csv, records)
        print(f'table: {args.csv}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
