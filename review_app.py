"""Review and correct predicted landmarks in the browser; save the corrected records.

    python review_app.py --checkpoint best_MRE.pth --images photos/ --out-dir reviewed/
    python review_app.py --checkpoint model.onnx --images photos/ --out-dir reviewed/ --port 8001
    python review_app.py --images photos/ --out-dir reviewed/ --export-table reviewed.pkl

The first form predicts every photograph in --images, starts a local web server (127.0.0.1:8000)
and prints the address to open: drag misplaced points while the measurements update, then Save
writes <out-dir>/<image stem>.json. The last form turns the saved records into a training table
for prepare_cephalometric_data.py (see README, "Review and correct").
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
    add_options(parser, 'score_threshold', 'mm_per_pixel', 'device')
    parser.add_argument('--export-table', metavar='FILE.pkl',
                        help='do not serve: write the records in --out-dir as a training table '
                        'for prepare_cephalometric_data.py --input')
    return check_options(parser.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_table:
        from cephalometric.review.export import export_reviewed
        count = export_reviewed(args.images, args.out_dir, args.export_table)
        print(f'{count} reviewed images -> {args.export_table}')
        print(f'next: python prepare_cephalometric_data.py --input {args.export_table} '
              '--out-dir data/reviewed')
        return 0
    if not args.checkpoint:
        raise UserError('--checkpoint is required to review (best_MRE.pth or a .onnx model)')
    if not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint {args.checkpoint} not found; give best_MRE.pth from training '
                        'or a .onnx from export_onnx.py')
    from cephalometric.review.server import bind, serve
    from cephalometric.review.store import ReviewStore
    # Bad folders, a bad --host or a busy --port fail before the model is loaded.
    ReviewStore.check_options(args.images, args.out_dir, args.score_threshold, args.mm_per_pixel)
    bind(args.host, args.port).close()

    from cephalometric.prediction.predictor import LandmarkPredictor
    predictor = LandmarkPredictor(args.checkpoint, device=args.device)
    store = ReviewStore(args.images, args.out_dir, predictor, score_threshold=args.score_threshold,
                        mm_per_pixel=args.mm_per_pixel)
    serve(store, args.host, args.port)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
