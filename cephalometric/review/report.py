"""A one-page report per reviewed patient, as PDF or PNG (matplotlib, no other PDF library).

Job: from a saved review record (`review.store`'s layout) and its photograph, draw one A4 page: the
traced photograph (points numbered, estimated skeletal points as diamonds, S-N / N-A / N-B lines,
the calibration line), the clinical table (clinical names, values, full norms, "+"/"++" and
"-"/"--" beyond one and two SD), the skeletal class, reviewer initials, date and model version.
The photograph's stem is the only identifier on the page: no patient name is ever read or written.
`write_reports` does it for every record of a reviewed folder (`review_app.py --report`), writing
all files or none (`prediction.results.StagedFiles`). Imports matplotlib, numpy and the package's
`data.images`, `errors`, `landmarks`, `measurements`, `outputs`, `prediction.results`,
`review.clinical` and `review.store`.
"""
from __future__ import annotations

import io
import math
import os
import os.path as osp
from typing import Optional

import numpy as np

from cephalometric.data.images import read_rgb
from cephalometric.errors import UserError
from cephalometric.landmarks import estimated_landmarks, find_landmark
from cephalometric.measurements import ANGLE_LINES, CLASS_NAMES
from cephalometric.outputs import nearest_existing
from cephalometric.prediction.results import StagedFiles
from cephalometric.review.clinical import table_rows
from cephalometric.review.store import list_folder_images, parse_json, read_record

A4 = (8.27, 11.69)   # inches
# Okabe & Ito colours: the same hues as the page, readable with colour-vision deficiencies.
POINT = '#e69f00'
ESTIMATE = '#56b4e9'
MARK_COLORS = {1: '#e69f00', 2: '#d55e00'}


def load_record(path: str) -> dict:
    """A saved review, checked as `store.read_record` checks it, plus the parts the page shows
    (measurements: numbers; review fields: short text); UserError for anything else."""
    read_record(path)     # landmarks, size, status, calibration: refused there when wrong
    problem = f'{path} is not a record written by review_app.py; move it out of the reviewed folder'
    with open(path, encoding='utf-8') as stream:
        record = parse_json(stream.read(1 << 22))
    measurements = record.get('measurements') or {}
    review = record.get('review') or {}
    if not isinstance(measurements, dict) or not isinstance(review, dict):
        raise UserError(problem)
    for key, value in measurements.items():
        number = value if key != 'skeletal_class' else (value if value in (1, 2, 3) else None)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or \
                not math.isfinite(number):
            raise UserError(problem)
    for key in ('reviewer', 'date', 'reason'):
        value = review.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 300):
            raise UserError(problem)
    model = review.get('model')
    if model is not None and not (isinstance(model, dict) and all(
            isinstance(model.get(k), (str, type(None))) for k in ('file', 'sha256'))):
        raise UserError(problem)
    note = record.get('skeletal_class_note')
    if note is not None and not isinstance(note, str):
        raise UserError(problem)
    return record


def figure(record: dict, rgb: np.ndarray):
    """The report page of `record` on photograph `rgb` as a matplotlib Figure."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=A4, dpi=100)
    review = record.get('review') or {}
    stem = osp.splitext(osp.basename(str(record.get('image', ''))))[0]
    status = review.get('status', 'reviewed')
    fig.text(0.06, 0.965, 'Cephalometric analysis from a lateral photograph', fontsize=14,
             weight='bold')
    model = review.get('model') or {}
    version = f"{model.get('file', '?')} sha256 {str(model.get('sha256', '?'))[:12]}" if model \
        else 'not recorded'
    calibration = record.get('calibration')
    spacing = (f"{calibration['mm_per_pixel']:.4g} mm/px (calibrated on this photo, "
               f"{calibration['length_mm']:g} mm)") if calibration else 'none (values in px)'
    lines = [f'Case: {stem}     Status: {status}' +
             (f" ({review.get('reason')})" if review.get('reason') else ''),
             f"Reviewer: {review.get('reviewer') or 'not recorded'}     Date: "
             f"{review.get('date') or 'not recorded'}",
             f'Model: {version}', f'Scale: {spacing}']
    for row, text in enumerate(lines):
        fig.text(0.06, 0.94 - row * 0.018, text, fontsize=9)

    # The traced photograph.
    photo = fig.add_axes([0.06, 0.44, 0.5, 0.42])
    photo.imshow(rgb)
    photo.set_axis_off()
    names = [lm['name'] for lm in record['landmarks']]
    points = np.array([[np.nan, np.nan] if lm.get('x') is None or lm.get('y') is None
                       else [lm['x'], lm['y']] for lm in record['landmarks']], float)
    default = estimated_landmarks(names)
    estimated = [bool(lm.get('estimated', guess)) for lm, guess in zip(record['landmarks'],
                                                                       default)]
    for start, end in ANGLE_LINES:
        i, j = find_landmark(names, start), find_landmark(names, end)
        if i is not None and j is not None and np.isfinite(points[[i, j]]).all():
            photo.plot(points[[i, j], 0], points[[i, j], 1], color='white', lw=0.8)
    if calibration:
        ends = np.array(calibration['points'], float)
        photo.plot(ends[:, 0], ends[:, 1], color='#cc79a7', lw=1.2)
    for index, (point, guess) in enumerate(zip(points, estimated)):
        if not np.isfinite(point).all():
            continue
        photo.scatter([point[0]], [point[1]], s=22, marker='D' if guess else 'o',
                      c=ESTIMATE if guess else POINT, edgecolors='black', linewidths=0.6, zorder=3)
        photo.annotate(str(index + 1), point, xytext=(4, 3), textcoords='offset points',
                       fontsize=6, color='white', weight='bold',
                       bbox=dict(boxstyle='round,pad=0.1', fc='black', alpha=0.5, lw=0))
    photo.set_xlim(-0.5, rgb.shape[1] - 0.5)
    photo.set_ylim(rgb.shape[0] - 0.5, -0.5)

    # Landmark key beside the photograph.
    key = fig.add_axes([0.6, 0.44, 0.36, 0.42])
    key.set_axis_off()
    key_lines = []
    for index, name in enumerate(names):
        hidden = not np.isfinite(points[index]).all()
        key_lines.append(f'{index + 1:>2}  {name}' + ('  (estimate)' if estimated[index] else '')
                         + ('  not visible' if hidden else ''))
    key.text(0, 1, '\n'.join(key_lines), fontsize=7, va='top', family='monospace')
    key.text(0, 0.02, 'o visible point   <> diamond: estimated, under the skin (not seen on a '
             'photo)', fontsize=6, va='bottom', wrap=True)

    # The class and the clinical table.
    measurements = record.get('measurements') or {}
    cls = measurements.get('skeletal_class')
    if status == 'cannot trace':
        headline = f"Cannot trace: {review.get('reason') or ''}"
    elif cls is not None:
        headline = (f"Skeletal {CLASS_NAMES.get(cls, cls)}  (ANB {measurements.get('ANB', 0):.2f}"
                    ' deg; Class I: 0 to 4 deg)')
    else:
        note = record.get('skeletal_class_note') or 'S, N, A or B missing'
        headline = f'Skeletal class not given: {note}'
    fig.text(0.06, 0.415, headline, fontsize=12, weight='bold')
    rows = [row for row in table_rows(measurements) if row['unit'] != 'px' or not calibration]
    table = fig.add_axes([0.06, 0.04, 0.9, 0.36])
    table.set_axis_off()
    if rows:
        cells = [[row['name'], f"{row['text']} {row['unit']}".strip(), row['norm'], row['sign']]
                 for row in rows if row['key'] != 'skeletal_class']
        if cells:
            drawn = table.table(cellText=cells, colLabels=['measurement', 'value', 'norm', 'mark'],
                                loc='upper left', colLoc='left', cellLoc='left',
                                colWidths=[0.46, 0.18, 0.26, 0.08])
            drawn.auto_set_font_size(False)
            drawn.set_fontsize(7)
            drawn.scale(1, 0.95)
            for number, row in enumerate(r for r in rows if r['key'] != 'skeletal_class'):
                color = MARK_COLORS.get(abs(row['mark']))
                if color:
                    for column in range(4):
                        drawn[number + 1, column].set_facecolor(color + '55')
    fig.text(0.06, 0.02, 'mark: + / - outside 1 SD of the norm, ++ / -- outside 2 SD (norms for '
             'adults of European ancestry: a guide, not a diagnosis). No patient name is stored.',
             fontsize=6.5)
    return fig


def render_report(record_path: str, image_path: str, kind: str = 'pdf',
                  record: Optional[dict] = None) -> bytes:
    """The report of one record as PDF or PNG bytes."""
    record = record or load_record(record_path)
    fig = figure(record, read_rgb(image_path))
    stream = io.BytesIO()
    metadata = {'Title': 'Cephalometric report', 'Creator': 'review_app.py'} if kind == 'pdf' \
        else None
    fig.savefig(stream, format=kind, dpi=150 if kind == 'png' else 100, metadata=metadata)
    return stream.getvalue()


def write_reports(images_dir: str, reviewed_dir: str, out_dir: str,
                  only: Optional[list] = None) -> list[str]:
    """`<stem>_report.pdf` and `.png` in `out_dir` for every record in `reviewed_dir` (or the
    stems in `only`); all written or none. Returns the paths written."""
    if not osp.isdir(reviewed_dir):
        raise UserError(f'reviewed folder {reviewed_dir} not found; give the --out-dir the review '
                        'app saved into')
    if not osp.isdir(images_dir):
        raise UserError(f'--images {images_dir} is not a folder')
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise UserError(f'--report {out_dir} is a file; give a folder for the reports')
    parent = nearest_existing(osp.realpath(out_dir))
    if not osp.isdir(parent):
        raise UserError(f'--report {out_dir} lies under the file {parent}; give a folder path')
    if not os.access(parent, os.W_OK | os.X_OK) or not os.stat(parent).st_mode & 0o222:
        raise UserError(f'--report {out_dir}: the folder {parent} cannot be written; choose a '
                        'writable folder')
    images = {osp.splitext(name)[0]: name for name in list_folder_images(images_dir)[0]}
    stems = sorted(osp.splitext(f)[0] for f in os.listdir(reviewed_dir)
                   if f.endswith('.json') and not f.startswith('.'))
    if only:
        unknown = [s for s in only if s not in stems]
        if unknown:
            raise UserError(f'no saved review for {", ".join(unknown)} in {reviewed_dir}; save it '
                            'in the review app first')
        stems = [s for s in stems if s in only]
    if not stems:
        raise UserError(f'no reviewed records (*.json) in {reviewed_dir}; save some in the review '
                        'app first')
    inputs = {osp.realpath(osp.join(folder, name)) for folder in (images_dir, reviewed_dir)
              for name in os.listdir(folder)}
    for stem in stems:
        for kind in ('pdf', 'png'):
            if osp.realpath(osp.join(out_dir, f'{stem}_report.{kind}')) in inputs:
                raise UserError(f'--report {out_dir} would write {stem}_report.{kind} over one of '
                                'the photographs or records it reads; choose another folder')
    written = []
    try:
        with StagedFiles() as staged:
            for stem in stems:
                if stem not in images:
                    raise UserError(f'{stem}.json in {reviewed_dir} has no image {stem}.* in '
                                    f'{images_dir}; give the images folder it was reviewed from')
                record = load_record(osp.join(reviewed_dir, f'{stem}.json'))
                for kind in ('pdf', 'png'):
                    target = osp.join(out_dir, f'{stem}_report.{kind}')
                    content = render_report('', osp.join(images_dir, images[stem]), kind, record)
                    with open(staged.reserve(target), 'wb') as stream:
                        stream.write(content)
                    written.append(target)
    except OSError as error:
        raise UserError(f'cannot write the reports in {out_dir} ({error.strerror}); choose a '
                        'writable folder') from None
    return written
