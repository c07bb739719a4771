"""Write the prepared dataset: PNG images, COCO-style keypoint JSON per split, metainfo, summary.

Its job: `prepare_dataset` (the whole of prepare_cephalometric_data.py: read the table, validate
it, write the folder; with --image-source rgbd each depth map goes beside its photograph as
`<stem>.npy`, see `depth` for the format) and the pieces it writes (`coco_files`,
`metainfo_dict`, `build_summary`, `format_summary`). The output folder follows the project's one
rule (`outputs`): checked before the pickle is read, written aside, marked, swapped into place,
and an existing folder is replaced only with `--overwrite` when this project wrote it, never the
input's folder or a parent of it. The metainfo is data (`metainfo.json`), never code.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

from cephalometric.data.depth import DEPTH_SUFFIX, RGBD_INPUTS, save_depth
from cephalometric.data.reader import METAINFO_FILE, SPLITS
from cephalometric.data.records import (
    DEFAULT_RULER_IMAGE_SIZE,
    Record,
    RecordSet,
    check_preparation_options,
    natural_key,
    read_records,
)
from cephalometric.data.table import load_table, name_some
from cephalometric.drawing import landmark_color
from cephalometric.errors import UserError
from cephalometric.landmarks import is_standard_set
from cephalometric.outputs import (
    MARKER,
    LegacyLayout,
    check_output_folder,
    staged_output_folder,
)

MAX_FILE_NAME_BYTES = 200    # <stem>.png; file systems allow 255, and a temporary adds a suffix
PNG_COMPRESSION = 1          # lossless either way; level 1 is the fastest and barely larger
KEYPOINT_SIGMA = 0.025       # OKS sigma per landmark (MMPose needs one; only COCO eval uses it)
# Prepared datasets from before the marker listed its files: marked by it (0.3) or by summary.json
# alone (older), always with annotations/; --overwrite replaces them when they hold nothing else.
_PREPARED_FILES = ('images/*.png', 'images/*.npy', 'annotations/*.json', 'metainfo.json',
                   'metainfo.py', 'summary.json')
LEGACY_MARKERS = (LegacyLayout(MARKER, ('annotations',), _PREPARED_FILES),
                  LegacyLayout('summary.json', ('annotations',), _PREPARED_FILES))


def safe_file_stem(patient_id: str) -> str:
    """A patient id usable as a file name on any system: keep [A-Za-z0-9._-], replace the rest."""
    return re.sub(r'[^A-Za-z0-9._-]', '_', patient_id)


# --------------------------------------------------------------------------------------------------
# Writing the prepared dataset


def _number(value: float, digits: int = 3) -> float:
    return round(float(value), digits) + 0.0     # + 0.0 turns -0.0 into 0.0 for stable JSON


def order_records(records: Sequence[Record]) -> list[Record]:
    """train, val, test; patients in natural id order within each, so ids ignore row order."""
    rank = {split: index for index, split in enumerate(SPLITS)}
    return sorted(records, key=lambda r: (rank[r.split], natural_key(r.patient_id), r.patient_id))


def file_names(records: Sequence[Record]) -> dict[str, str]:
    """patient_id -> PNG file name; refuse ids that become the same file (ignoring case, for
    macOS/Windows file systems)."""
    names = {r.patient_id: safe_file_stem(r.patient_id) + '.png' for r in records}
    groups: dict[str, list[str]] = {}
    for pid, name in names.items():
        groups.setdefault(name.lower(), []).append(pid)
    too_long = [repr(pid[:40]) + '...' for pid, name in names.items()
                if len(name.encode('utf-8')) > MAX_FILE_NAME_BYTES]
    if too_long:
        raise UserError(f'patient ids too long for a file name (over '
                        f'{MAX_FILE_NAME_BYTES - 4} characters): {name_some(too_long)}; shorten '
                        'them')
    clashes = [' / '.join(map(repr, pids)) for pids in groups.values() if len(pids) > 1]
    if clashes:
        raise UserError(f'patient ids that give the same image file name: {name_some(clashes)}; '
                        'rename them (file names keep only letters, digits, ".", "_" and "-", and '
                        'ignore case)')
    return names


def coco_entries(record: Record, image_id: int, file_name: str) -> tuple[dict, dict]:
    """The COCO image and annotation dicts for one record."""
    width, height = record.width, record.height
    keypoints, visible = [], 0
    for x, y in record.keypoints:
        if np.isnan(x) or np.isnan(y):
            keypoints += [0.0, 0.0, 0]
        else:
            keypoints += [_number(x), _number(y), 2]
            visible += 1
    image = {'id': image_id, 'file_name': file_name, 'width': width, 'height': height,
             'patient_id': record.patient_id}
    if record.depth is not None:       # RGB-D: the depth map beside the photograph, same stem
        image['depth_file'] = depth_file_name(file_name)
    annotation = {'id': image_id, 'image_id': image_id, 'category_id': 1, 'keypoints': keypoints,
                  'num_keypoints': visible, 'bbox': [0, 0, width, height], 'area': width * height,
                  'iscrowd': 0, 'mm_per_pixel': record.mm_per_pixel,
                  'skeletal_class': record.skeletal_class}
    return image, annotation


def depth_file_name(image_file_name: str) -> str:
    """<stem>.npy for <stem>.png: the depth map's file beside its photograph."""
    return osp.splitext(image_file_name)[0] + DEPTH_SUFFIX


def coco_files(records: Sequence[Record], names: Sequence[str],
               file_name_of: dict[str, str]) -> dict[str, dict]:
    """split -> COCO dict; image ids start at 1 and are unique across all splits.

    An RGB-D dataset says so in each file's info (`inputs`: ["rgb", "depth"]) and names each
    image's depth map (`depth_file`); other datasets carry neither key, as before.
    """
    category = {'id': 1, 'name': 'face', 'supercategory': 'face', 'keypoints': list(names),
                'skeleton': []}
    rgbd = any(r.depth is not None for r in records)
    files = {split: {'info': {'description': f'cephalometric landmarks, {split} split',
                              'version': '1.0', 'split': split,
                              **({'inputs': list(RGBD_INPUTS)} if rgbd else {})},
                     'images': [], 'annotations': [], 'categories': [category]}
             for split in SPLITS}
    for image_id, record in enumerate(order_records(records), start=1):
        image, annotation = coco_entries(record, image_id, file_name_of[record.patient_id])
        files[record.split]['images'].append(image)
        files[record.split]['annotations'].append(annotation)
    return files


def metainfo_dict(names: Sequence[str]) -> dict:
    """MMPose dataset meta (`dataset_info`) for `names`, ready for parse_pose_metainfo; written as
    metainfo.json (JSON turns the int keypoint ids into strings; the reader turns them back).
    Landmarks on the profile have no left/right partner, so `swap` is empty; the colours are those
    of our own pictures."""
    return {'dataset_name': 'cephalometric',
            'paper_info': {'author': '', 'title': '', 'container': '', 'year': '',
                           'homepage': ''},
            'keypoint_info': {index: {'name': name, 'id': index,
                                      'color': [int(c) for c in landmark_color(index)],
                                      'type': '', 'swap': ''}
                              for index, name in enumerate(names)},
            'skeleton_info': {},
            'joint_weights': [1.0] * len(names),
            'sigmas': [KEYPOINT_SIGMA] * len(names)}


def write_png(path: Path, image: np.ndarray) -> None:
    # imencode + write (not imwrite) so non-ASCII paths work on every OS; OpenCV wants BGR.
    ok, buffer = cv2.imencode('.png', cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f'OpenCV could not encode {path.name}')
    path.write_bytes(buffer.tobytes())


def write_record_files(record: Record, folder: Path, file_name: str) -> None:
    """The photograph as PNG and, for RGB-D, its depth map as <stem>.npy beside it."""
    write_png(folder / file_name, record.image)
    if record.depth is not None:
        save_depth(str(folder / depth_file_name(file_name)), record.depth)


def write_images(records: Sequence[Record], folder: Path, file_name_of: dict[str, str],
                 progress: bool, workers: Optional[int]) -> None:
    from tqdm import tqdm
    workers = workers or min(8, os.cpu_count() or 1)
    # PNG encoding releases the GIL, so threads give real parallelism without copying images.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(lambda r: write_record_files(r, folder, file_name_of[r.patient_id]),
                        records)
        for _ in tqdm(jobs, total=len(records), desc='writing images', unit='img',
                      disable=not progress):
            pass


def write_json(path: Path, data: Any, indent: Optional[int] = None,
               sort_keys: bool = True) -> None:
    separators = (',', ': ') if indent else (',', ':')
    path.write_text(json.dumps(data, indent=indent, sort_keys=sort_keys, separators=separators,
                               allow_nan=False) + '\n', encoding='utf-8')


def _class_counts(records: Sequence[Record]) -> dict[str, int]:
    counts = Counter('unknown' if r.skeletal_class is None else str(r.skeletal_class)
                     for r in records)
    return {key: counts[key] for key in sorted(counts, key=natural_key)}


def build_summary(records: RecordSet, has_class: bool, input_path: Path,
                  options: dict) -> dict:
    """Everything the closing table shows, machine-readable."""
    per_split = {}
    for split in SPLITS:
        chosen = [r for r in records if r.split == split]
        sizes = Counter(f'{r.width}x{r.height}' for r in chosen)
        entry = {'images': len(chosen),
                 'image_sizes': dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
                 'missing_landmarks': int(sum(np.isnan(r.keypoints[:, 0]).sum() for r in chosen)),
                 'with_mm_per_pixel': sum(r.mm_per_pixel is not None for r in chosen)}
        if has_class:
            entry['classes'] = _class_counts(chosen)
        per_split[split] = entry
    all_sizes = Counter(f'{r.width}x{r.height}' for r in records)
    standard = is_standard_set(records.landmark_names)
    return {
        'input': str(input_path),
        'options': options,
        'landmarks': records.landmark_names,
        'num_landmarks': len(records.landmark_names),
        'landmark_set': 'standard 19-landmark photograph set' if standard else
                        f'custom set of {len(records.landmark_names)} landmarks',
        'total_images': len(records),
        'image_sizes': dict(sorted(all_sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
        'missing_landmarks': sum(s['missing_landmarks'] for s in per_split.values()),
        'clipped_landmarks': records.clipped,
        'split_source': records.split_source,
        'spacing_source': records.spacing_source,
        'splits': per_split,
        'notes': records.notes + [
            'the test split is written for final evaluation only: training uses train, and the '
            'best checkpoint is chosen on val'],
    }


def _sizes_text(sizes: dict[str, int], limit: int = 3) -> str:
    items = list(sizes.items())
    if len(items) == 1:
        return items[0][0]
    text = ', '.join(f'{size} ({count})' for size, count in items[:limit])
    return text + (f', +{len(items) - limit} more' if len(items) > limit else '')


def format_summary(summary: dict) -> str:
    """The closing table printed by the CLI."""
    has_class = any('classes' in s for s in summary['splits'].values())
    header = ['split', 'images', 'image sizes', 'missing landmarks', 'mm/px known']
    if has_class:
        header.append('classes')
    rows = []
    for split, entry in summary['splits'].items():
        row = [split, str(entry['images']), _sizes_text(entry['image_sizes']) or '-',
               str(entry['missing_landmarks']), f"{entry['with_mm_per_pixel']}/{entry['images']}"]
        if has_class:
            row.append(' '.join(f'{k}:{v}' for k, v in entry['classes'].items()) or '-')
        rows.append(row)
    total = sum(s['with_mm_per_pixel'] for s in summary['splits'].values())
    row = ['total', str(summary['total_images']), _sizes_text(summary['image_sizes']),
           str(summary['missing_landmarks']), f"{total}/{summary['total_images']}"]
    rows.append(row + ([''] if has_class else []))
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    table = ['  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [header] + rows]
    lines = [f"landmarks: {summary['num_landmarks']} ({summary['landmark_set']})",
             f"splits: {summary['split_source']}",
             f"pixel spacing: {summary['spacing_source']}",
             *table]
    lines += [f'note: {note}' for note in summary['notes']]
    return '\n'.join(lines)


def prepare_dataset(input_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], *,
                    image_size=None, image_source: str = 'rgb',
                    val_fraction: Optional[float] = None, test_fraction: Optional[float] = None,
                    seed: int = 0,
                    mm_per_pixel: Optional[float] = None, mm_per_pixel_column: Optional[str] = None,
                    ruler_json=None, ruler_image_size: int = DEFAULT_RULER_IMAGE_SIZE,
                    clip: bool = False, overwrite: bool = False, progress: bool = True,
                    workers: Optional[int] = None) -> dict:
    """Read `input_path`, validate it, and write the prepared dataset to `out_dir` atomically.

    The output folder is checked before the (possibly large) pickle is read, and everything is
    written to a staging folder that is swapped into place only once complete, so a failure (or
    Ctrl-C) never leaves a half-written dataset. Returns the summary also saved as summary.json.
    """
    input_path, out_dir = Path(input_path), Path(out_dir)
    check_preparation_options(val_fraction, test_fraction, seed, mm_per_pixel, ruler_image_size,
                              image_size)   # impossible numbers: one line before any work
    check_output_folder(out_dir, overwrite=overwrite, protected=[input_path, ruler_json],
                        legacy_markers=LEGACY_MARKERS)
    table = load_table(input_path)
    records = read_records(table, image_source=image_source, image_size=image_size, clip=clip,
                           val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           mm_per_pixel=mm_per_pixel, mm_per_pixel_column=mm_per_pixel_column,
                           ruler_json=ruler_json, ruler_image_size=ruler_image_size)
    file_name_of = file_names(records)
    options = {'image_size': None if image_size is None else str(image_size),
               'image_source': image_source, 'val_fraction': val_fraction,
               'test_fraction': test_fraction, 'seed': seed, 'mm_per_pixel': mm_per_pixel,
               'mm_per_pixel_column': mm_per_pixel_column,
               'ruler_json': None if ruler_json is None else str(Path(ruler_json).resolve()),
               'ruler_image_size': ruler_image_size, 'clip': clip}
    has_class = records.columns is not None and records.columns.skeletal_class is not None
    summary = build_summary(records, has_class, input_path.resolve(), options)
    del table

    with staged_output_folder(out_dir, tool='prepare_cephalometric_data.py') as staging:
        (staging / 'images').mkdir()
        (staging / 'annotations').mkdir()
        write_images(records, staging / 'images', file_name_of, progress, workers)
        for split, coco in coco_files(records, records.landmark_names, file_name_of).items():
            write_json(staging / 'annotations' / f'{split}.json', coco)
        write_json(staging / METAINFO_FILE, metainfo_dict(records.landmark_names), indent=2,
                   sort_keys=False)
        write_json(staging / 'summary.json', summary, indent=2)
    return summary

