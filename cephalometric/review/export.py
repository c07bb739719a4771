"""Reviewed records -> a training table, so corrected cases become training data without hand work.

Job: read every `<stem>.json` the review app saved in a folder, pair it with its photograph in the
images folder, and write one pandas table in the layout `prepare_cephalometric_data.py --input`
reads (see README "Data"): `patient_id` (the image stem), `Image` (H, W, 3 RGB array) and
`<name>_x` / `<name>_y` per landmark, with the reviewed positions. Nothing else is copied: no
paths, no names. Imports pandas, numpy and the package's `atomic`, `errors`, `images` and
`review_store`.
"""
from __future__ import annotations

import json
import os
import os.path as osp

import numpy as np
import pandas as pd

from cephalometric.atomic import atomic_path
from cephalometric.data.images import read_rgb
from cephalometric.errors import UserError
from cephalometric.review.store import list_folder_images


def _load(path: str) -> dict:
    try:
        with open(path, encoding='utf-8') as stream:
            record = json.load(stream)
        landmarks = record['landmarks']
        points = [(str(lm['name']), float(lm['x']), float(lm['y'])) for lm in landmarks]
        if not all(isinstance(lm.get('predicted'), dict) for lm in landmarks):
            raise KeyError('predicted')
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f'{path} is not a record written by review_app.py; move it out of the '
                        'reviewed folder') from None
    if not points or not all(np.isfinite(v) for _, x, y in points for v in (x, y)):
        raise UserError(f'{path} has missing coordinates; open it in review_app.py and save again')
    return {'points': points}


def reviewed_table(images_dir: str, reviewed_dir: str) -> pd.DataFrame:
    """One row per reviewed image: patient_id, Image and the reviewed landmark columns."""
    if not osp.isdir(reviewed_dir):
        raise UserError(f'reviewed folder {reviewed_dir} not found; give the --out-dir the review '
                        'app saved into')
    if not osp.isdir(images_dir):
        raise UserError(f'--images {images_dir} is not a folder')
    images = {osp.splitext(name)[0]: name for name in list_folder_images(images_dir)[0]}
    rows, names = [], None
    for file_name in sorted(os.listdir(reviewed_dir)):
        stem, extension = osp.splitext(file_name)
        if extension != '.json' or file_name.startswith('.'):
            continue
        if stem not in images:
            raise UserError(f'{osp.join(reviewed_dir, file_name)} has no image {stem}.* in '
                            f'{images_dir}; give the images folder it was reviewed from')
        points = _load(osp.join(reviewed_dir, file_name))['points']
        if names is None:
            names = [name for name, _, _ in points]
        elif [name for name, _, _ in points] != names:
            raise UserError(f'{file_name} has other landmarks than the other records in '
                            f'{reviewed_dir}; keep one landmark set per folder')
        row = {'patient_id': stem, 'Image': read_rgb(osp.join(images_dir, images[stem]))}
        for name, x, y in points:
            row[f'{name}_x'], row[f'{name}_y'] = x, y
        rows.append(row)
    if not rows:
        raise UserError(f'no reviewed records (*.json) in {reviewed_dir}; save some in the review '
                        'app first')
    columns = ['patient_id', 'Image'] + [f'{n}_{axis}' for n in names for axis in ('x', 'y')]
    return pd.DataFrame(rows, columns=columns)


def export_reviewed(images_dir: str, reviewed_dir: str, out_path: str) -> int:
    """Write the reviewed table to `out_path` (a pickle), atomically; returns the number of rows."""
    table = reviewed_table(images_dir, reviewed_dir)
    with atomic_path(out_path) as temporary:
        table.to_pickle(temporary, compression=None)
    return len(table)
