#!/usr/bin/env python
"""Turn a pickled table of face photographs and landmarks into an MMPose-ready COCO dataset.

    python prepare_cephalometric_data.py --input data/train_data_pure_depth.pkl \
        --out-dir data/cephalometric

See README.md, section "Data", for the accepted layouts and every option. The work is done by
cephalometric.data.writer.prepare_dataset; this file only parses the command line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from cephalometric.data.records import (
    DEFAULT_RULER_IMAGE_SIZE,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    IMAGE_SOURCES,
)
from cephalometric.data.writer import format_summary, prepare_dataset
from cephalometric.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Validate a pickled DataFrame of photographs and landmark columns and write '
                    'PNG images, COCO keypoint annotations per split and MMPose metainfo.',
        epilog='Warning: loading a pickle runs code stored in it; only give your own, trusted '
               'files.')
    parser.add_argument('--input', default='data/train_data_pure_depth.pkl',
                        help='pickled pandas DataFrame, one row per patient (default: %(default)s)')
    parser.add_argument('--out-dir', default='data/cephalometric',
                        help='folder to write the prepared dataset to (default: %(default)s)')
    parser.add_argument('--image-size', default=None, metavar='N|WxH',
                        help='size of flat (H*W, 3) images: N for NxN or WIDTHxHEIGHT such as '
                             '484x600 (default: square, inferred)')
    parser.add_argument('--image-source', choices=IMAGE_SOURCES, default='rgb',
                        help='train on the photograph (rgb), on the depth_feature map as a grey '
                             'picture (depth), or on both as 4 channels (rgbd: each depth map is '
                             'stored as <stem>.npy beside its photograph)')
    parser.add_argument('--val-fraction', type=float, default=None,
                        help='share of patients for validation when there is no set column '
                             f'(default: {DEFAULT_VAL_FRACTION})')
    parser.add_argument('--test-fraction', type=float, default=None,
                        help='share of patients for the held-out test split when there is no set '
                             f'column (default: {DEFAULT_TEST_FRACTION})')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the automatic split (default: %(default)s)')
    parser.add_argument('--mm-per-pixel', type=float, default=None, metavar='X',
                        help='pixel spacing of every image, in millimetres per pixel')
    parser.add_argument('--mm-per-pixel-column', default=None, metavar='NAME',
                        help='column with each image\'s spacing (default: a column named '
                             'mm_per_pixel or pixel_spacing, if present)')
    parser.add_argument('--ruler-json', default=None, metavar='FILE',
                        help='JSON of 10 mm ruler end points per patient id, to compute spacing')
    parser.add_argument('--ruler-image-size', type=int, default=DEFAULT_RULER_IMAGE_SIZE,
                        metavar='PX', help='width in pixels of the photos the ruler was marked on '
                                           '(default: %(default)s)')
    parser.add_argument('--clip', action='store_true',
                        help='clip landmarks outside their image onto its border instead of '
                             'failing')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset this project prepared in --out-dir (never a '
                             'folder it did not write, nor one holding --input)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    summary = prepare_dataset(
        args.input, args.out_dir, image_size=args.image_size, image_source=args.image_source,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
        mm_per_pixel=args.mm_per_pixel, mm_per_pixel_column=args.mm_per_pixel_column,
        ruler_json=args.ruler_json, ruler_image_size=args.ruler_image_size, clip=args.clip,
        overwrite=args.overwrite)
    print(f"Prepared {summary['total_images']} images in {args.out_dir}")
    print(format_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
