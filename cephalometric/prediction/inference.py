"""Detect cephalometric landmarks on new photographs and draw them (inference.py).

    python inference.py --checkpoint work_dirs/cephalometric/best_MRE.pth \
        --img-path patient.jpg --out-file patient_landmarks.jpg
    python inference.py --checkpoint best_MRE.pth --img-path photos/ --out-dir results/ \
        --json results/landmarks.json --csv results/landmarks.csv --mm-per-pixel 0.1

The model was trained on face crops that all look one way. By default (--bbox auto) the face region
and the facing direction are found automatically, so a photograph framed wider than the training
crops, or of the patient's other side, works as it is; --bbox full uses the whole image (photographs
cropped like the training data), --bbox x,y,w,h a region you give. A picture with no face found, or
too small a one, gets its landmarks flagged for review and no skeletal class.
Only the checkpoint is needed: the landmark names and the preprocessing travel inside it. An RGB-D
model (trained with --image-source rgbd) also needs each photograph's depth map: --depth-path FILE,
or a FOLDER where <stem>.npy (or a 16-bit <stem>.png/.tif) sits for every photograph <stem>.jpg.

All or nothing: every input image is read and every output location checked before the model is
loaded; pictures, --json and --csv are written beside their targets and moved into place together
at the end, so a failure leaves none of them. Two inputs with the same name (x.jpg, x.png) get
pictures x_jpg_landmarks.jpg and x_png_landmarks.jpg.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from collections import Counter

from cephalometric.cli import FRAMING_MODES, add_options, check_options
from cephalometric.data.depth import check_depth_size, match_depth_files, read_depth_file
from cephalometric.data.images import find_images, read_rgb
from cephalometric.errors import UserError
from cephalometric.outputs import check_not_inputs
from cephalometric.prediction.predictor import check_bbox
from cephalometric.prediction.results import (
    StagedFiles,
    check_output_file,
    class_withheld_reason,
    csv_text,
    image_record,
    records_json,
)

DEFAULT_OUT_DIR = 'work_dirs/inference'


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='inference.py', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    add_options(parser, 'checkpoint', required=('checkpoint',))
    parser.add_argument('--img-path', required=True, help='an image, a folder or a glob pattern')
    parser.add_argument('--out-file', help='annotated picture for a single image')
    parser.add_argument('--out-dir', help='folder for annotated pictures '
                        f'(<image name>_landmarks.jpg; default {DEFAULT_OUT_DIR})')
    add_options(parser, 'bbox', 'depth_path')
    parser.add_argument('--json', help='write landmarks and measurements as JSON')
    parser.add_argument('--csv', help='write one row per image as CSV')
    add_options(parser, 'mm_per_pixel', 'score_threshold', 'device', 'batch_size', 'backend',
                'no_refine')
    parser.add_argument('--no-draw', action='store_true', help='skip the pictures')
    return check_options(parser.parse_args(argv))


def picture_names(images: list[str]) -> list[str]:
    """<stem>_landmarks.jpg, unique: colliding stems add their extension, then a number."""
    stems = [osp.splitext(osp.basename(p)) for p in images]
    counts = Counter(stem.lower() for stem, _ in stems)
    used, names = set(), []
    for stem, ext in stems:
        base = stem if counts[stem.lower()] == 1 else f'{stem}_{ext.lstrip(".")}'
        name, number = base, 2
        while name.lower() in used:
            name, number = f'{base}_{number}', number + 1
        used.add(name.lower())
        names.append(f'{name}_landmarks.jpg')
    return names


def output_paths(images: list[str], args) -> list[str | None]:
    if args.no_draw:
        return [None] * len(images)
    if args.out_file:
        if len(images) > 1:
            raise UserError(f'--out-file takes one image but {args.img_path} matched '
                            f'{len(images)}; use --out-dir for several')
        return [args.out_file]
    out_dir = args.out_dir or DEFAULT_OUT_DIR
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise UserError(f'--out-dir {out_dir} is a file; choose a folder')
    return [osp.join(out_dir, name) for name in picture_names(images)]


def check_outputs(images: list[str], pictures: list, args, predictor=None,
                  depth_files=None) -> None:
    """Every output writable, none of them an input or another output. Called before the model
    is loaded, and again with it (its framing model file) and the depth maps."""
    named = [(p, '--out-file' if args.out_file else '--out-dir') for p in pictures if p]
    named += [(path, option) for path, option in ((args.json, '--json'), (args.csv, '--csv'))
              if path]
    for path, option in named:
        check_output_file(path, option)
    inputs = [(p, 'one of the input images') for p in images]
    inputs += [(args.checkpoint, 'the checkpoint'), (args.depth_path, 'the --depth-path')]
    if predictor is not None and hasattr(predictor.network, 'metadata'):   # an .onnx pair
        from cephalometric.prediction.onnx import COMPANION_MODELS, companion_model_path
        inputs += [(companion_model_path(predictor.network.metadata(), key, args.checkpoint),
                    f'the checkpoint\'s {key.replace("_", " ")}') for key in COMPANION_MODELS]
    inputs += [(p, 'a depth map of the input') for p in depth_files or ()]
    check_not_inputs(named, inputs)
    if pictures and pictures[0] and args.out_file:
        import numpy as np

        from cephalometric.drawing import encode_image  # checks the picture's extension
        encode_image(args.out_file, np.zeros((1, 1, 3), np.uint8))


def read_all(images: list[str]) -> list[tuple[int, int]]:
    """(width, height) of every image; one-line error naming the first unreadable one."""
    sizes = []
    for path in images:
        height, width = read_rgb(path).shape[:2]
        sizes.append((width, height))
    return sizes


def check_depths(images: list[str], sizes, needs_depth: bool, depth_path):
    """The depth file of each image for an RGB-D model (all read and size-checked now), else None.

    A missing depth is refused with one line before anything is written.
    """
    if not needs_depth:
        if depth_path:
            print('note: this model takes no depth map; --depth-path is ignored', file=sys.stderr)
        return None
    files = match_depth_files(images, depth_path)
    for image, (width, height), path in zip(images, sizes, files):
        check_depth_size(read_depth_file(path), (height, width), f'{image} and {path}')
    return files


def main(argv=None) -> int:
    args = parse_args(argv)
    bbox = args.bbox
    images = find_images(args.img_path)
    pictures = output_paths(images, args)
    check_outputs(images, pictures, args)
    sizes = read_all(images)       # every input readable before anything is loaded or written
    if bbox not in FRAMING_MODES:
        for path, (width, height) in zip(images, sizes):
            try:
                check_bbox(bbox, width, height)
            except UserError as error:
                raise UserError(f'{path}: {error}') from None

    from cephalometric.drawing import draw_landmarks, encode_image
    from cephalometric.measurements import compute_measurements
    from cephalometric.prediction.predictor import LandmarkPredictor

    predictor = LandmarkPredictor(args.checkpoint, device=args.device, backend=args.backend,
                                  refine=not args.no_refine)
    if args.no_refine and (predictor.settings.get('error_calibration') or {}).get(
            'signal') == 'refine_uncertainty_and_shift':
        print('note: the error calibration was measured with the refinement model; with '
              '--no-refine no expected errors or intervals are stated')
    depth_files = check_depths(images, sizes, getattr(predictor, 'needs_depth', False),
                               args.depth_path)
    check_outputs(images, pictures, args, predictor, depth_files)
    records = []
    with StagedFiles() as staged:
        # Reserved first: proves the locations writable before minutes of work.
        tables = {path: staged.reserve(path) for path in (args.json, args.csv) if path}
        for start in range(0, len(images), args.batch_size):
            chunk = slice(start, start + args.batch_size)
            batch = [read_rgb(p) for p in images[chunk]]
            depths = {} if depth_files is None else {
                'depths': [read_depth_file(p) for p in depth_files[chunk]]}
            predictions = predictor.predict(batch, bbox, batch_size=args.batch_size, **depths)
            for path, picture, prediction, out, size in zip(images[chunk], batch, predictions,
                                                            pictures[chunk], sizes[chunk]):
                measurements = compute_measurements(prediction.names, prediction.keypoints,
                                                    mm_per_pixel=args.mm_per_pixel)
                reason = class_withheld_reason(prediction.names, prediction.scores, size,
                                               args.score_threshold,
                                               prediction.framing['review_reason'])
                note = None if reason is None else f'no skeletal class: {reason}'
                record = image_record(path, prediction, measurements,
                                      score_threshold=args.score_threshold, picture=out,
                                      size=size, class_note=note,
                                      mm_per_pixel=args.mm_per_pixel)
                records.append(record)
                if out is not None:
                    shown = {k: v for k, v in measurements.items()
                             if not (note and k == 'skeletal_class')}
                    drawn = draw_landmarks(picture, prediction.names, prediction.keypoints,
                                           prediction.scores, shown,
                                           score_threshold=args.score_threshold, note=note,
                                           radius90=prediction.radius90,
                                           certainty=record.get('certainty'))
                    with open(staged.reserve(out), 'wb') as stream:
                        stream.write(encode_image(out, drawn))
        for path, text in ((args.json, records_json), (args.csv, csv_text)):
            if path:
                with open(tables[path], 'w', encoding='utf-8', newline='') as stream:
                    stream.write(text(records))
    for record in records:
        if record['picture']:
            print(f'{record["image"]} -> {record["picture"]}')
    if args.json:
        print(f'landmarks: {args.json}')
    if args.csv:
        print(f'table: {args.csv}')
    return 0
