"""Read a prepared dataset (the folder `prepare_cephalometric_data.py` writes), as data only.

Its job: the split names (`SPLITS`, defined here once), the landmark names and MMPose metainfo of a
data root, each split's COCO-style annotations as arrays (`load_split`) and the mean-shape
baseline. Nothing here executes anything from the data root: `metainfo.json` is plain JSON, and the
`metainfo.py` that older versions wrote is parsed with `ast` and accepted only when it is a single
`dataset_info = dict(...)` literal. A damaged, truncated or foreign file is refused with one
`UserError` line that says how to re-create the dataset. Every reader of a prepared dataset
(training, evaluation, the MMPose dataset class) goes through these functions. An RGB-D dataset
(`--image-source rgbd`) lists `inputs: ["rgb", "depth"]` in each annotations file's info and a
plain `depth_file` name (`<stem>.npy` in images/) per image (`read_inputs`, `Split.depth_paths`).
"""
from __future__ import annotations

import ast
import math
import os.path as osp
from dataclasses import dataclass
from typing import Any

import numpy as np

from cephalometric.data.decoding import MAX_IMAGE_SIDE
from cephalometric.errors import UserError, first_line
from cephalometric.json_data import read_json_file
from cephalometric.radial_error import radial_errors, summarize_radial_errors

SPLITS = ('train', 'val', 'test')
METAINFO_FILE = 'metainfo.json'
LEGACY_METAINFO_FILE = 'metainfo.py'     # written by versions before metainfo.json; never executed
REQUIRED_FILES = ('annotations/train.json', 'annotations/val.json')
MAX_METAINFO_BYTES = 10 * 1024 * 1024
MAX_FINITE = 1e300              # larger integers are not numbers any reader can use
MAX_LANDMARKS = 1000            # more keypoints than any landmark set has


def recreate_hint(data_root: str) -> str:
    """The 'how to fix' half of every refusal about a damaged prepared dataset."""
    return (f're-create it with python prepare_cephalometric_data.py --input YOUR_TABLE.pkl '
            f'--out-dir {data_root} --overwrite')


def _load_json(path: str, max_bytes: int | None = None) -> Any:
    """The JSON in `path`, bounded (`json_data`: size, nesting depth, integer digits, no
    NaN/Infinity); ValueError with a one-line reason when it cannot be read as such."""
    try:
        return read_json_file(path, **({} if max_bytes is None else {'max_bytes': max_bytes}))
    except (OSError, ValueError, RecursionError, MemoryError) as error:
        reason = first_line(error, limit=120)
        raise ValueError(reason) from None


# --------------------------------------------------------------------------------------------------
# Metainfo


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression; `dict(key=literal, ...)` counts as a literal."""
    if isinstance(node, ast.Call):
        if (isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args
                and all(keyword.arg for keyword in node.keywords)):
            return {keyword.arg: _literal(keyword.value) for keyword in node.keywords}
        raise ValueError('a function call')
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError('a ** expansion')
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    return ast.literal_eval(node)       # constants and signed numbers; ValueError for anything else


def read_legacy_metainfo(path: str, data_root: str) -> dict:
    """`dataset_info` of an old metainfo.py, parsed (never run); UserError unless a literal."""
    refuse = (f'{path} is not a plain dataset_info literal, so it is not read (files in a dataset '
              f'are never run as code); {recreate_hint(data_root)}')
    try:
        if osp.getsize(path) > MAX_METAINFO_BYTES:
            raise UserError(refuse)
        with open(path, encoding='utf-8') as stream:
            tree = ast.parse(stream.read(), filename=path)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        raise UserError(refuse) from None
    body = [node for node in tree.body if not (isinstance(node, ast.Expr)
                                                and isinstance(node.value, ast.Constant))]
    if (len(body) != 1 or not isinstance(body[0], ast.Assign) or len(body[0].targets) != 1
            or not isinstance(body[0].targets[0], ast.Name)
            or body[0].targets[0].id != 'dataset_info'):
        raise UserError(refuse)
    try:
        return _literal(body[0].value)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise UserError(refuse) from None


def check_metainfo(info: Any, source: str, data_root: str) -> dict:
    """MMPose's dataset_info with int keypoint ids 0..K-1; UserError for anything malformed."""
    def refuse(what: str) -> UserError:
        return UserError(f'{source} {what}; {recreate_hint(data_root)}')

    if not isinstance(info, dict):
        raise refuse('does not hold an object')
    missing = [key for key in ('keypoint_info', 'joint_weights', 'sigmas') if key not in info]
    if missing:
        raise refuse(f'has no {", ".join(missing)}')
    raw = info['keypoint_info']
    if not isinstance(raw, dict) or not raw:
        raise refuse('lists no landmarks (keypoint_info)')
    if len(raw) > MAX_LANDMARKS:
        raise refuse(f'lists {len(raw)} landmarks, more than the {MAX_LANDMARKS} read')
    keypoints = {}
    for key, entry in raw.items():
        try:
            if isinstance(key, bool) or not isinstance(key, (int, str)) or len(str(key)) > 6:
                raise ValueError(key)
            index = int(key)
        except (TypeError, ValueError):
            raise refuse(f'has a keypoint id {_shown(key)} that is not a landmark number') \
                from None
        if not isinstance(entry, dict) or not isinstance(entry.get('name'), str):
            raise refuse(f'has no landmark name for keypoint {index}')
        keypoints[index] = dict(entry, id=index)
    count = len(keypoints)
    if sorted(keypoints) != list(range(count)):
        raise refuse(f'numbers its {count} landmarks other than 0 to {count - 1}')
    names = [keypoints[i]['name'] for i in range(count)]
    if len(set(names)) != count:
        raise refuse('names a landmark twice')
    for index, entry in keypoints.items():
        colour = entry.get('color', [255, 128, 0])
        if not (isinstance(colour, (list, tuple)) and len(colour) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                        for c in colour)):
            raise refuse(f'has a colour for keypoint {index} that is not three numbers 0-255')
        if entry.get('swap', '') not in ('', *names) or not isinstance(entry.get('type', ''), str):
            raise refuse(f'has a swap partner or type for keypoint {index} that is not a landmark')
    for key in ('joint_weights', 'sigmas'):
        values = info[key]
        if (not isinstance(values, (list, tuple)) or len(values) != count
                or not all(_is_finite(v) and 0 <= v <= 1e6 for v in values)
                or (key == 'sigmas' and not all(v > 0 for v in values))):
            kind = 'positive' if key == 'sigmas' else 'non-negative'
            raise refuse(f'has {key} that are not {count} {kind} numbers')
    skeleton = info.get('skeleton_info', {})
    if not isinstance(skeleton, dict) or not all(
            isinstance(link, dict) and isinstance(link.get('link'), (list, tuple))
            and len(link['link']) == 2 and all(end in names for end in link['link'])
            for link in skeleton.values()):
        raise refuse('has a skeleton_info that does not link landmarks by name')
    return {'dataset_name': str(info.get('dataset_name', 'cephalometric')),
            'paper_info': info.get('paper_info', {}),
            'keypoint_info': {i: keypoints[i] for i in range(count)},
            'skeleton_info': skeleton,
            'joint_weights': [float(v) for v in info['joint_weights']],
            'sigmas': [float(v) for v in info['sigmas']]}


def read_metainfo(data_root: str) -> dict:
    """The data root's MMPose dataset_info (metainfo.json, or an old metainfo.py parsed safely)."""
    path = osp.join(data_root, METAINFO_FILE)
    legacy = osp.join(data_root, LEGACY_METAINFO_FILE)
    if osp.isfile(path):
        try:
            info = _load_json(path, MAX_METAINFO_BYTES)
        except ValueError as reason:
            raise UserError(f'cannot read {path} as JSON ({reason}); '
                            f'{recreate_hint(data_root)}') from None
        return check_metainfo(info, path, data_root)
    if osp.isfile(legacy):
        return check_metainfo(read_legacy_metainfo(legacy, data_root), legacy, data_root)
    raise UserError(f'no {METAINFO_FILE} in {data_root}; run python prepare_cephalometric_data.py '
                    f'--out-dir {data_root} first (or {recreate_hint(data_root)})')


def read_landmark_names(data_root: str) -> list[str]:
    """Landmark names of a prepared dataset, in keypoint order; UserError if it is not one."""
    missing = [f for f in REQUIRED_FILES if not osp.isfile(osp.join(data_root, f))]
    if not (osp.isfile(osp.join(data_root, METAINFO_FILE))
            or osp.isfile(osp.join(data_root, LEGACY_METAINFO_FILE))):
        missing.append(METAINFO_FILE)
    if missing:
        raise UserError(f'no prepared dataset at {data_root} (missing {", ".join(missing)}); run '
                        f'python prepare_cephalometric_data.py --out-dir {data_root} first')
    info = read_metainfo(data_root)
    return [info['keypoint_info'][i]['name'] for i in range(len(info['keypoint_info']))]


# --------------------------------------------------------------------------------------------------
# Annotations


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number that is finite (a JSON literal such as 1e400 parses as infinity; an integer of
    400 digits in an old metainfo.py is too large for a float)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= MAX_FINITE
    return _is_number(value) and math.isfinite(value)


def _is_whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _shown(value: Any, limit: int = 40) -> str:
    """`value` for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _image_problem(image: Any, rgbd: bool) -> str | None:
    """What is wrong with one `images` entry, or None."""
    if not isinstance(image, dict):
        return f'is a {type(image).__name__}, not an object'
    if not _plain_file_name(image.get('file_name')):
        return f'has file_name {_shown(image.get("file_name"))}, not a file name in images/'
    for key in ('width', 'height'):
        if not _is_whole(image.get(key), 1, MAX_IMAGE_SIDE):
            return (f'has {key} {_shown(image.get(key))}, not a whole number of pixels '
                    f'1..{MAX_IMAGE_SIDE}')
    if rgbd and not _plain_file_name(image.get('depth_file')):
        return f'has depth_file {_shown(image.get("depth_file"))}, not a file name in images/'
    if not isinstance(image.get('patient_id', ''), (str, int)) or \
            isinstance(image.get('patient_id'), bool):
        return f'has patient_id {_shown(image.get("patient_id"))}, not text'
    return None


def _annotation_problem(ann: dict, count: int, image: dict, category_id: Any) -> str | None:
    """What is wrong with one annotation of `image`, or None."""
    points = ann.get('keypoints')
    if not isinstance(points, list) or len(points) != 3 * count:
        size = len(points) if isinstance(points, list) else _shown(points)
        return (f'has {size} keypoint numbers, not {3 * count} ({count} landmarks: x, y, '
                'visibility)')
    if not all(_is_finite(v) for v in points):
        return 'has a keypoint value that is not a finite number'
    if not all(v in (0, 1, 2) for v in points[2::3]):
        return 'has a keypoint visibility other than 0, 1 or 2'
    if not all(-image['width'] <= x <= 2 * image['width'] and
               -image['height'] <= y <= 2 * image['height']
               for x, y in zip(points[0::3], points[1::3])):
        return 'has a keypoint far outside its image'
    bbox = ann.get('bbox')
    if 'bbox' not in ann:
        return 'has no bbox'
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)
            and bbox[2] > 0 and bbox[3] > 0):
        return f'has bbox {_shown(bbox)}, not four finite numbers x, y, w, h with w, h > 0'
    if not _is_whole(ann.get('id'), 0, 2 ** 62):
        return f'has id {_shown(ann.get("id"))}, not a whole number'
    if ann.get('category_id') != category_id:
        return f'has category_id {_shown(ann.get("category_id"))}, not {category_id!r}'
    for key, check in (('num_keypoints', lambda v: _is_whole(v, 0, count)),
                       ('area', lambda v: _is_finite(v) and v >= 0),
                       ('iscrowd', lambda v: _is_whole(v, 0, 0))):
        if key in ann and not check(ann[key]):
            return f'has {key} {_shown(ann[key])}'
    spacing = ann.get('mm_per_pixel')
    if spacing is not None and not (_is_finite(spacing) and spacing > 0):
        return f'has mm_per_pixel {_shown(spacing)}, not a positive number'
    klass = ann.get('skeletal_class')
    if klass is not None and not _is_whole(klass, -10 ** 9, 10 ** 9):
        return f'has skeletal_class {_shown(klass)}, not a whole number'
    return None


def _image_name(image: Any, position: int) -> str:
    """How a message names an image entry: its id and file, or its position."""
    if isinstance(image, dict) and _is_whole(image.get('id'), 0, 2 ** 62):
        file_name = image.get('file_name')
        shown = f' ({file_name})' if isinstance(file_name, str) and len(file_name) < 80 else ''
        return f'image id {image["id"]}{shown}'
    return f'image entry {position + 1}'


def read_annotations(path: str, data_root: str = '') -> dict:
    """One split's COCO-style JSON, checked for everything the readers and MMPose use; UserError
    naming the file and the record otherwise. Sizes, depth and digits are bounded before the
    values are used (`json_data`)."""
    data_root = data_root or osp.dirname(osp.dirname(path)) or '.'

    def refuse(what: str) -> UserError:
        return UserError(f'annotations file {path} {what}; {recreate_hint(data_root)}')

    if not osp.isfile(path):
        raise UserError(f'no annotations file {path}; run python prepare_cephalometric_data.py '
                        f'--out-dir {data_root} first')
    try:
        coco = _load_json(path)
    except ValueError as reason:
        raise refuse(f'is not readable JSON (truncated or damaged: {reason})') from None
    if not isinstance(coco, dict):
        raise refuse('does not hold a JSON object')
    missing = [key for key in ('images', 'annotations', 'categories') if key not in coco]
    if missing:
        raise refuse(f'has no {", ".join(missing)}')
    images, annotations, categories = coco['images'], coco['annotations'], coco['categories']
    if not (isinstance(images, list) and isinstance(annotations, list)
            and isinstance(categories, list) and categories
            and isinstance(categories[0], dict)
            and isinstance(categories[0].get('keypoints'), list)):
        raise refuse('does not have the images/annotations/categories lists it should')
    category = categories[0]
    names = category['keypoints']
    if (len(categories) != 1 or not names or len(names) > MAX_LANDMARKS
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)
            or not _is_whole(category.get('id'), 0, 2 ** 62)):
        raise refuse('does not have one category with an id and distinct landmark names')
    count = len(names)
    info = coco.get('info', {})
    inputs = info.get('inputs', ['rgb']) if isinstance(info, dict) else ['rgb']
    if inputs not in (['rgb'], ['rgb', 'depth']):
        raise refuse(f'lists inputs {_shown(inputs)}; expected ["rgb"] or ["rgb", "depth"]')
    rgbd = 'depth' in inputs
    by_id = {}
    for position, image in enumerate(images):
        if not (isinstance(image, dict) and _is_whole(image.get('id'), 0, 2 ** 62)):
            if rgbd and isinstance(image, dict) and not _plain_file_name(image.get('depth_file')):
                raise refuse('is RGB-D but an image has no plain depth_file name')
            raise refuse(f'has an image entry without a numeric id or a file_name '
                         f'({_image_name(image, position)})')
        problem = _image_problem(image, rgbd)
        if problem and rgbd and 'depth_file' in problem:
            raise refuse(f'is RGB-D but {_image_name(image, position)} has no plain depth_file '
                         'name')
        if problem:
            raise refuse(f'{_image_name(image, position)} {problem}')
        if image['id'] in by_id:
            raise refuse(f'lists image id {image["id"]} twice')
        by_id[image['id']] = image
    annotated, annotation_ids = set(), set()
    for position, ann in enumerate(annotations):
        image = by_id.get(ann.get('image_id')) if isinstance(ann, dict) else None
        if image is None:
            raise refuse(f'has an annotation without {3 * count} keypoint numbers or a known '
                         f'image_id (annotation {position + 1})')
        where = f'annotation {position + 1} (for {_image_name(image, 0)})'
        problem = _annotation_problem(ann, count, image, category['id'])
        if problem:
            raise refuse(f'{where} {problem}')
        if ann['image_id'] in annotated:
            raise refuse(f'{where} is a second annotation of that image; one face per image')
        if ann['id'] in annotation_ids:
            raise refuse(f'{where} repeats annotation id {ann["id"]}')
        annotated.add(ann['image_id'])
        annotation_ids.add(ann['id'])
    if len(annotated) != len(by_id):
        missing = sorted(set(by_id) - annotated)
        raise refuse(f'has {len(missing)} image(s) without an annotation '
                     f'({_image_name(by_id[missing[0]], 0)})')
    return coco


def _plain_file_name(value: Any) -> bool:
    """A file name inside images/, never a path that leads elsewhere."""
    return (isinstance(value, str) and bool(value) and value not in ('.', '..')
            and '/' not in value and '\\' not in value and '\0' not in value)


def read_inputs(data_root: str, split: str = 'train') -> list[str]:
    """What a model trained on `data_root` takes: ['rgb'] or ['rgb', 'depth'] (RGB-D)."""
    path = osp.join(data_root, 'annotations', f'{split}.json')
    info = read_annotations(path, data_root).get('info')
    return list(info.get('inputs', ['rgb'])) if isinstance(info, dict) else ['rgb']


@dataclass
class Split:
    """One split's annotations as arrays (N images, K landmarks)."""
    names: list
    patient_ids: list
    image_paths: list
    keypoints: np.ndarray      # (N, K, 2) px, NaN where missing
    visible: np.ndarray        # (N, K) bool
    mm_per_pixel: np.ndarray   # (N,) NaN where unknown
    skeletal_class: list       # int or None per image
    depth_paths: list = None   # RGB-D: the depth map (.npy) of each image; None otherwise


def load_split(data_root: str, split: str) -> Split:
    path = osp.join(data_root, 'annotations', f'{split}.json')
    if not osp.isfile(path):
        raise UserError(f'no {split} split at {path}; run prepare_cephalometric_data.py '
                        f'--out-dir {data_root} first')
    coco = read_annotations(path, data_root)
    names = list(coco['categories'][0]['keypoints'])
    by_image = {ann['image_id']: ann for ann in coco['annotations']}
    patient_ids, image_paths, keypoints, visible, spacing, classes = [], [], [], [], [], []
    rgbd = 'depth' in (coco.get('info') or {}).get('inputs', [])
    depth_paths = [] if rgbd else None
    for image in coco['images']:
        ann = by_image[image['id']]
        flat = np.asarray(ann['keypoints'], float).reshape(-1, 3)
        seen = flat[:, 2] > 0
        points = flat[:, :2].copy()
        points[~seen] = np.nan
        patient_ids.append(str(image.get('patient_id', image['id'])))
        image_paths.append(osp.join(data_root, 'images', image['file_name']))
        keypoints.append(points)
        visible.append(seen)
        value = ann.get('mm_per_pixel')
        spacing.append(np.nan if value is None else float(value))
        classes.append(ann.get('skeletal_class'))
        if rgbd:
            depth_paths.append(osp.join(data_root, 'images', image['depth_file']))
    k = len(names)
    return Split(names, patient_ids, image_paths,
                 np.asarray(keypoints, float).reshape(-1, k, 2),
                 np.asarray(visible, bool).reshape(-1, k),
                 np.asarray(spacing, float), classes, depth_paths)


def mean_shape(split: Split) -> np.ndarray:
    """Mean position of each landmark over the images that have it: (K, 2)."""
    return np.nanmean(split.keypoints, axis=0)


def mean_shape_baseline(data_root: str, split: str = 'val') -> dict:
    """Metrics of predicting the mean training shape for every image of `split`.

    The floor any model must beat: it knows where landmarks are on average, nothing about the
    patient in front of it.
    """
    train, target = load_split(data_root, 'train'), load_split(data_root, split)
    prediction = np.broadcast_to(mean_shape(train), target.keypoints.shape)
    errors = radial_errors(prediction, np.nan_to_num(target.keypoints))
    return summarize_radial_errors(errors, target.visible, target.mm_per_pixel, target.names,
                                   per_landmark=False)
