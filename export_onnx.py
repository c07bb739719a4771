"""Export a trained checkpoint to ONNX, the fastest way to run the model on a CPU.

    python export_onnx.py --checkpoint work_dirs/cephalometric/best_MRE.pth --out model.onnx
    python inference.py --checkpoint model.onnx --img-path patient.jpg

A model with a framing model (the default training) also gets model.framing.onnx beside
model.onnx: automatic face framing runs on it; one with a refinement model (also the default)
gets model.refine.onnx, which re-locates every landmark. Keep the files together.
The .onnx file carries the landmark names and everything preprocessing and decoding need (input
size, box padding, normalisation, heatmap decoder) in its metadata, so inference needs only that
file, numpy, OpenCV and onnxruntime: no torch or MMPose. Any batch size works. Before writing, the
export is checked against the PyTorch model on a synthetic picture (landmarks within 0.1 px).
"""
from __future__ import annotations

import argparse
import sys

from cephalometric.errors import UserError, run_cli


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--checkpoint', required=True, help='.pth written by training')
    parser.add_argument('--out', required=True, help='ONNX file to write, e.g. model.onnx')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.out.lower().endswith('.onnx'):
        raise UserError(f'--out must end in .onnx, got {args.out}')
    from cephalometric.prediction.export import export_checked, framing_file
    from cephalometric.prediction.onnx import companion_file

    reference, difference = export_checked(args.checkpoint, args.out)
    width, height = reference.input_size
    print(f'{args.out}: {len(reference.names)} landmarks, input {width}x{height}; agrees with the '
          f'PyTorch model within {difference:.4f} px')
    if reference.framing_network is not None:
        print(f'{framing_file(args.out)}: its framing model (keep it beside {args.out})')
    if reference.refine_network is not None:
        print(f'{companion_file(args.out, "refine_model")}: its refinement model (keep it beside '
              f'{args.out})')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
