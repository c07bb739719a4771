"""Training curves: loss and validation metric per epoch from MMEngine's `vis_data/scalars.json`.

Used by `hooks.TrainingCurveHook` (rank 0, after training).
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from collections import defaultdict
from typing import Optional

from cephalometric.atomic import atomic_path


def read_epoch_history(work_dir: str, metric: str = 'MRE') -> tuple[dict, dict]:
    """(mean training loss per epoch, validation metric per epoch) over all runs in work_dir.

    Later runs (a resume) override earlier entries for the same epoch.
    """
    losses: dict[int, list] = defaultdict(list)
    scores: dict[int, float] = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        run_losses: dict[int, list] = defaultdict(list)
        with open(path) as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                # training lines carry 'epoch'; validation lines carry the epoch as 'step'
                if 'loss' in entry and 'epoch' in entry:
                    run_losses[int(entry['epoch'])].append(float(entry['loss']))
                elif metric in entry and 'step' in entry:
                    scores[int(entry['step'])] = float(entry[metric])
        for epoch, values in run_losses.items():
            losses[epoch] = values
    mean_losses = {e: sum(v) / len(v) for e, v in sorted(losses.items()) if v}
    return mean_losses, dict(sorted(scores.items()))


def plot_training_curves(work_dir: str, out_path: str, metric: str = 'MRE') -> Optional[str]:
    """Write a two-panel PNG (loss, validation metric); returns its path, or None without data."""
    losses, scores = read_epoch_history(work_dir, metric)
    if not losses and not scores:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    if losses:
        loss_axis.plot(list(losses), list(losses.values()), marker='o', markersize=3)
    loss_axis.set(title='training loss (mean per epoch)', xlabel='epoch', ylabel='loss')
    loss_axis.set_yscale('log')
    if scores:
        metric_axis.plot(list(scores), list(scores.values()), marker='o', markersize=3,
                         color='tab:red')
        best_epoch = min(scores, key=scores.get)
        metric_axis.axhline(scores[best_epoch], color='grey', linestyle=':', linewidth=1)
        metric_axis.set_title(f'validation {metric} (best {scores[best_epoch]:.2f} '
                              f'at epoch {best_epoch})')
    metric_axis.set(xlabel='epoch', ylabel=f'{metric} (px)')
    from matplotlib.ticker import MaxNLocator
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_path(out_path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return out_path
