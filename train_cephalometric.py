"""Train the cephalometric landmark model (HRNetV2-W18, MMPose/MMEngine) on a prepared dataset.

    python train_cephalometric.py             # data/cephalometric -> work_dirs/cephalometric
    python train_cephalometric.py --resume    # continue an interrupted run
    torchrun --nproc_per_node 4 train_cephalometric.py --launcher pytorch   # 4 GPUs

See README.md, section "Training", and `python train_cephalometric.py --help`. The work is done by
cephalometric.training; this file is only the entry point.
"""
from __future__ import annotations

import sys

from cephalometric.errors import run_cli
from cephalometric.evaluation.calibration import calibrate_checkpoint
from cephalometric.training.run import train


def main(argv=None) -> int:
    return train(argv, calibrate=calibrate_checkpoint)


if __name__ == '__main__':
    sys.exit(run_cli(main))
