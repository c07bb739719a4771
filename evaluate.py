"""Evaluate a trained checkpoint on one split of a prepared dataset: numbers, tables and pictures.

    python evaluate.py --checkpoint work_dirs/cephalometric/best_MRE.pth

`python evaluate.py --help` lists every option; docs/evaluation.md explains the report. The work is
done by cephalometric.evaluation.evaluate; this file is only the entry point.
"""
from __future__ import annotations

import sys

from cephalometric.errors import run_cli
from cephalometric.evaluation.evaluate import main

if __name__ == '__main__':
    sys.exit(run_cli(main))
