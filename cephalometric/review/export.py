"""Reviewed records -> a training table, so corrected cases become training data without hand work.

Job: read every `<stem>.json` the review app saved in a folder, pair it with its photograph in the
images folder, and write one pandas table in the layout `prepare_cephalometric_data.py --input`
reads (see README "Data"): `patient_id` (the image stem), `Image` (H, W, 3 RGB array),
`<name>_x` / `<name>_y` per landmark, with the reviewed positions (NaN for a landmark marked not
visible: a missing value to prepare), and `mm per pixel` when any record has a calibration (NaN
for the others). Cases marked "cannot trace" are left out. Nothing else is copied: no paths, no
names. The output is refused, with one line and nothing written, when it is a folder, lies under
a file, is in a folder that cannot be written, or is one of the photographs or records it reads.
Imports pandas, numpy and the package's `atomic`, `data.images`, `errors`, `outputs`,
`prediction.results` and `review.store`.
"""
from __future__ import annotations

import os
import os.path as osp

import numpy as np
import pandas as pd

from cephalometric.atomic import atomic_path
from cephalometric.data.images import read_rgb
from cephalometric.errors import UserError
from cephalometric.outputs import nearest_existing
from cephalometric.prediction.results import check_output_file
from cephalometric.review.store import list_folder_images, read_record

SPACING_COLUMN = 'mm per pixel'   # a name prepare_cephalometric_data.py reads as pixel spacing


def _load(path: str) -> dict:
    try:
        case = read_record(path)
    except UserError:
        raise UserError(f'{path} is not a record written by review_app.py; move it out of the '
                        'reviewed folder') from None
    points = [(name, float(x), float(y)) for name, (x, y) in zip(case.names, case.current)]
    return {'points': points, 'status': case.status,
            'mm_per_pixel': case.calibration['mm_per_pixel'] if case.calibration else None}


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
        loaded = _load(osp.join(reviewed_dir, file_name))
        if loaded['status'] == 'cannot trace':
            continue
        points = loaded['points']
        if names is None:
            names = [name for name, _, _ in points]
        elif [name for name, _, _ in points] != names:
            raise UserError(f'{file_name} has other landmarks than the other records in '
                            f'{reviewed_dir}; keep one landmark set per folder')
        row = {'patient_id': stem, 'Image': read_rgb(osp.join(images_dir, images[stem])),
               SPACING_COLUMN: np.nan if loaded['mm_per_pixel'] is None else
               loaded['mm_per_pixel']}
        for name, x, y in points:
            row[f'{name}_x'], row[f'{name}_y'] = x, y
        rows.append(row)
    if not rows:
        raise UserError(f'no reviewed records (*.json) in {reviewed_dir} that can be traced; save '
                        'some in the review app first')
    columns = ['patient_id', 'Image'] + [f'{n}_{axis}' for n in names for axis in ('x', 'y')]
    if any(np.isfinite(row[SPACING_COLUMN]) for row in rows):
        columns.append(SPACING_COLUMN)
    return pd.DataFrame(rows, columns=columns)


def check_output(out_path: str, images_dir: str, reviewed_dir: str) -> None:
    """UserError when `out_path` cannot be the table: a folder, under a file, in a folder that
    cannot be written (`results.check_output_file`, every tool's rule), or one of the photographs
    or records this export reads."""
    option = '--export-table'
    check_output_file(out_path, option)
    target = osp.realpath(out_path)
    inputs = []
    for folder in (images_dir, reviewed_dir):
        if osp.isdir(folder):
            inputs += [osp.realpath(osp.join(folder, name)) for name in os.listdir(folder)]
    if target in inputs:
        raise UserError(f'{option} {out_path} is one of the photographs or reviewed records it '
                        'reads; give a new file name outside those folders')
    # Write bits too: root may write anywhere, but a folder made read-only is meant to stay so.
    parent = nearest_existing(osp.dirname(target))
    if not os.stat(parent).st_mode & 0o222:
        raise UserError(f'{option} {out_path}: the folder {parent} is read-only; choose a '
                        'writable folder')


def export_reviewed(images_dir: str, reviewed_dir: str, out_path: str) -> int:
    """Write the reviewed table to `out_path` (a pickle), atomically; returns the number of rows."""
    check_output(out_path, images_dir, reviewed_dir)
    table = reviewed_table(images_dir, reviewed_dir)
    try:
        with atomic_path(out_path) as temporary:
            table.to_pickle(temporary, compression=None)
    except OSError as error:
        raise UserError(f'cannot write --export-table {out_path} ({error.strerror or error}); '
                        'check free disk space and permissions') from None
    return len(table)
