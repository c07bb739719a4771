"""Review and correct predicted landmarks in the browser; save the corrected records.

    python review_app.py --checkpoint best_MRE.pth --images photos/ --out-dir reviewed/
    python review_app.py --checkpoint model.onnx --images photos/ --out-dir reviewed/ --port 8001
    python review_app.py --images photos/ --out-dir reviewed/ --export-table reviewed.pkl
    python review_app.py --images photos/ --out-dir reviewed/ --report reports/ [--only STEM ...]

The first form starts a local web server (127.0.0.1:8000) at once and prints the address to open;
the photographs in --images are predicted in the background (each once; saved reviews are never
predicted again) and appear in the page as they are done. Drag misplaced points while the
measurements update, then Save writes <out-dir>/<image stem>.json with the reviewer's initials,
the date and the model version (the checkpoint's SHA-256). --export-table turns the saved
records into a training table for prepare_cephalometric_data.py (see README, "Review and
correct"); --report writes a one-page <stem>_report.pdf and .png per saved review.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

from cephalometric.cli import add_options, check_options
from cephalometric.errors import UserError, run_cli


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    add_options(parser, 'checkpoint')
    parser.add_argument('--images', required=True, help='folder of photographs to review')
    parser.add_argument('--out-dir', required=True,
                        help='folder for the reviewed records (<image stem>.json)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only; the app '
                        'has no login)')
    parser.add_argument('--port', type=int, default=8000, help='port (default 8000; 0: any free)')
    add_options(parser, 'score_threshold', 'mm_per_pixel', 'device', 'no_refine')
    parser.add_argument('--export-table', metavar='FILE.pkl',
                        help='do not serve: write the records in --out-dir as a training table '
                        'for prepare_cephalometric_data.py --input')
    parser.add_argument('--estimated', metavar='NAMES',
                        help='landmarks a photograph cannot show, comma-separated, drawn as '
                        'estimates (default: the skeletal points of the set; "none" for X-rays)')
    parser.add_argument('--report', metavar='FOLDER',
                        help='do not serve: write a one-page report (<stem>_report.pdf and .png) '
                        'of every saved review in --out-dir into FOLDER')
    parser.add_argument('--only', nargs='+', metavar='STEM',
                        help='with --report: only these images (file names without extension)')
    args = check_options(parser.parse_args(argv))
    if args.export_table and args.report:
        raise UserError('give --export-table or --report, not both')
    if args.only and not args.report:
        raise UserError('--only goes with --report')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_table:
        from cephalometric.review.export import export_reviewed
        count = export_reviewed(args.images, args.out_dir, args.export_table)
        print(f'{count} reviewed images -> {args.export_table}')
        print(f'next: python prepare_cephalometric_data.py --input {args.export_table} '
              '--out-dir data/reviewed')
        return 0
    if args.report:
        from cephalometric.review.report import write_reports
        written = write_reports(args.images, args.out_dir, args.report, args.only)
        print(f'{len(written) // 2} reports -> {args.report} (PDF and PNG)')
        return 0
    if not args.checkpoint:
        raise UserError('--checkpoint is required to review (best_MRE.pth or a .onnx model)')
    if not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint {args.checkpoint} not found; give best_MRE.pth from training '
                        'or a .onnx from export_onnx.py')
    from cephalometric.landmarks import find_landmark
    from cephalometric.review.server import bind, serve
    from cephalometric.review.store import ReviewStore, model_version
    # Bad folders, a bad --host or a busy --port fail before the model is loaded.
    ReviewStore.check_options(args.images, args.out_dir, args.score_threshold, args.mm_per_pixel)
    bind(args.host, args.port).close()

    from cephalometric.prediction.predictor import LandmarkPredictor
    predictor = LandmarkPredictor(args.checkpoint, device=args.device,
                                  refine=not args.no_refine)
    estimated = None
    if args.estimated is not None:
        estimated = [] if args.estimated.strip().lower() == 'none' else \
            [name.strip() for name in args.estimated.split(',') if name.strip()]
        unknown = [name for name in estimated if find_landmark(predictor.names, name) is None]
        if unknown:
            raise UserError(f'--estimated names {", ".join(unknown)}, which this model does not '
                            f'predict; choose from {", ".join(predictor.names)}')
        estimated = [predictor.names[find_landmark(predictor.names, name)] for name in estimated]
    store = ReviewStore(args.images, args.out_dir, predictor, score_threshold=args.score_threshold,
                        mm_per_pixel=args.mm_per_pixel, background=True,
                        model=model_version(args.checkpoint), estimated=estimated)
    serve(store, args.host, args.port)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
