"""Detect cephalometric landmarks on new photographs and draw them.

    python inference.py --checkpoint work_dirs/cephalometric/best_MRE.pth \
        --img-path patient.jpg --out-file patient_landmarks.jpg

`python inference.py --help` lists every option; docs/inference.md explains framing and the
outputs. The work is done by cephalometric.prediction.inference; this file is only the entry point.
"""
from __future__ import annotations

import sys

from cephalometric.errors import run_cli
from cephalometric.prediction.inference import main

if __name__ == '__main__':
    sys.exit(run_cli(main))
