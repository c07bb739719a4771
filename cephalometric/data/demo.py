"""A synthetic, deterministic stand-in for the private photograph dataset.

The real data (`data/train_data_pure_depth.pkl`) cannot be shared, so this module draws lateral face
photographs with cv2 and stores them in exactly the same pickle layout: one row per patient with a
flat RGB image, a flat depth map, the split, the skeletal class and 19 landmark coordinate pairs.

The pictures are simple, but every landmark is tied to something drawn, so that a heatmap network
trained from scratch can learn them: soft-tissue points lie on the face profile curve, bone points
sit at small offsets behind it, sella is fixed relative to the ear and eye, gonion is the drawn jaw
angle. The skeleton is built from the clinical angles (SNA, ANB), so the class stored with each
record is exactly the one `cephalometric.measurements` derives from the record's own landmarks.
Demo and test data only: production tools must not depend on it.

    python -m cephalometric.data.demo --out data/demo/train_data_pure_depth.pkl
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import pandas as pd

from cephalometric.atomic import atomic_path
from cephalometric.errors import UserError, run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import skeletal_class, sna_snb_anb

# The real pickle spells one column 'Gonion _x' (trailing space in the name); keep it identical so
# code that runs on the demo data runs on the real data.
COLUMN_LANDMARK_NAMES = tuple('Gonion ' if name == 'Gonion' else name
                              for name in STANDARD_LANDMARKS)
COLUMNS = ['patient_id', 'Image', 'depth_feature', 'set', 'class'] + [
    f'{name}_{axis}' for name in COLUMN_LANDMARK_NAMES for axis in ('x', 'y')]
# The user's `set` column values (not the prepared split names: dev becomes val when prepared).
SET_VALUES = ('train', 'dev', 'test')

# All geometry is designed on a 224 px canvas and scaled to the requested image size.
CANONICAL_SIZE = 224
# Where nasion sits on the canonical canvas: puts the centre of the landmark cloud near the middle.
NASION_POSITION = np.array([127.0, 54.0])
# Landmarks stay this far (canonical px) inside the image, so crops and heatmaps never clip them.
MARGIN = 8.0

# Skeletal class I/II/III frequencies and the ANB range (degrees) each is drawn from. The ranges
# keep 0.3 deg away from the class thresholds (0 and 4 deg) so the class is unambiguous.
CLASS_PROBABILITIES = (0.5, 0.3, 0.2)
ANB_RANGES = {1: (0.3, 3.7), 2: (4.3, 9.0), 3: (-5.0, -0.3)}


def _catmull_rom(points, samples: int = 6) -> np.ndarray:
    """Smooth curve through `points`; control point j is row j * samples of the result."""
    p = np.asarray(points, float)
    padded = np.vstack([p[0], p, p[-1]])
    p0, p1, p2, p3 = (padded[i:len(padded) - 3 + i][:, None] for i in range(4))
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    curve = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                   + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3)
    return np.vstack([curve.reshape(-1, 2), p[-1]])


def _ellipse(center, axes, angle_deg: float = 0.0, start: float = 0.0, end: float = 360.0,
             count: int = 24) -> np.ndarray:
    """Points on an (arc of an) ellipse; angles in degrees, 0 = forward (+x), 90 = down (+y)."""
    t = np.radians(np.linspace(start, end, count))
    a = np.radians(angle_deg)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    return np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)], 1) + center


def _face(rng: np.random.Generator):
    """Sample one face on the canonical canvas, facing right, y pointing down.

    Returns (landmarks, shapes): landmarks maps each standard name to a point; shapes holds the
    polygons and polylines to draw. Points are placed relative to nasion (origin) and moved later.
    """
    u = rng.uniform
    xy = np.array

    # Skeleton from the clinical angles: sella behind nasion on a line rising ~8 deg anteriorly (the
    # natural head posture), A and B point at angles SNA and SNB = SNA - ANB below it. Drawing the
    # class first and ANB inside its range gives the wanted class mix.
    klass = int(rng.choice([1, 2, 3], p=CLASS_PROBABILITIES))
    anb = u(*ANB_RANGES[klass])
    sna = float(np.clip(rng.normal(82.0, 2.0), 77.0, 87.0))
    nasion = xy([0.0, 0.0])
    tilt = np.radians(u(4.0, 12.0))
    sella = u(58.0, 66.0) * xy([-np.cos(tilt), np.sin(tilt)])
    to_sella = np.arctan2(sella[1], sella[0])

    def below_sn(angle_deg, distance):
        direction = to_sella - np.radians(angle_deg)
        return distance * xy([np.cos(direction), np.sin(direction)])

    a_point = below_sn(sna, u(52.0, 58.0))
    b_point = below_sn(sna - anb, u(86.0, 96.0))

    # Maxilla and upper incisor hang off A point, the mandible and lower incisor off B point, so a
    # forward or backward mandible carries lower lip, chin and menton with it (the class driver).
    ans = a_point + xy([u(3, 6), -u(8, 11)])
    pns = ans + xy([-u(42, 48), u(0, 4)])
    upper_tip = a_point + xy([u(5, 9), u(17, 21)])
    upper_apex = upper_tip + xy([-u(8, 11), -u(18, 22)])
    lower_tip = b_point + xy([u(5, 8), -u(15, 19)])
    lower_apex = lower_tip + xy([-u(7, 10), u(18, 22)])
    pogonion = b_point + xy([u(2, 5), u(12, 16)])
    gnathion = b_point + xy([u(0, 2), u(20, 23)])
    menton = b_point + xy([-u(5, 8), u(25, 28)])
    gonion = sella + xy([u(-2, 6), u(68, 80)])

    # Soft tissue: a few px in front of the bone. Lips drape over whichever incisor sticks out most,
    # so no tooth ever pokes through the profile (large overjet in class II, reverse in class III).
    st_nasion = nasion + xy([u(5, 8), u(0, 2)])
    subnasal = ans + xy([u(10, 14), u(0, 2)])
    nose_tip = subnasal + xy([u(12, 20), -u(6, 11)])
    upper_lip = a_point + xy([u(13, 17), u(6, 9)])
    upper_lip[0] = max(upper_lip[0], upper_tip[0] + 7)
    lower_lip = b_point + xy([u(13, 17), -u(7, 10)])
    lower_lip[0] = max(lower_lip[0], upper_tip[0] + 4, lower_tip[0] + 7)
    stomion = (upper_lip + lower_lip) / 2 - xy([u(4, 6), 0.0])
    stomion[0] = max(stomion[0], upper_tip[0] + 3, lower_tip[0] + 3)
    st_pogonion = pogonion + xy([u(10, 13), 0.0])
    soft_menton = menton + xy([u(0, 3), u(6, 9)])

    # Profile control points from the crown (above the image) down to under the chin; the
    # soft-tissue landmarks are control points, so the smooth curve passes exactly through them.
    glabella = st_nasion + xy([u(3, 6), -u(9, 13)])
    sulcus = (subnasal + upper_lip) / 2 - xy([u(1, 3), 0.0])
    labiomental = b_point + xy([u(9, 12), 0.0])
    profile = [
        nasion + xy([-45.0, -100.0]), nasion + xy([-15.0, -85.0]), nasion + xy([0.0, -62.0]),
        nasion + xy([u(4, 8), -35.0]),
        glabella, st_nasion, (st_nasion + nose_tip) / 2 + xy([u(0, 2), -u(0, 2)]), nose_tip,
        nose_tip + xy([-u(3, 5), u(4, 6)]), subnasal, sulcus,
        upper_lip * 0.6 + sulcus * 0.4, upper_lip, stomion, lower_lip,
        lower_lip * 0.5 + labiomental * 0.5, labiomental, st_pogonion,
        (st_pogonion + soft_menton) / 2 + xy([u(1, 3), u(1, 3)]), soft_menton,
        soft_menton + xy([-12.0, -1.0])]
    # The lips (coloured vermilion) span the control points two either side of the stomion.
    stomion_index = next(i for i, point in enumerate(profile) if point is stomion)
    upper_vermilion, lower_vermilion = stomion_index - 2, stomion_index + 2
    # Jaw line, ramus and back of the head (mostly beyond the image edge) close the head outline;
    # the notch between ramus and nape shows the darker neck, so the jaw angle (gonion) stands out.
    ear_canal = sella + xy([-u(12, 16), u(18, 23)])
    jaw_angle = gonion + xy([-u(3, 5), u(3, 5)])
    back = [jaw_angle, xy([jaw_angle[0] - 2, ear_canal[1] + 22]), sella + xy([-70.0, 50.0]),
            sella + xy([-115.0, 0.0]), sella + xy([-80.0, -110.0])]
    samples = 6
    outline = _catmull_rom(profile + back, samples)
    mouth_corner = stomion + xy([-u(10, 14), u(1, 3)])
    lips = np.vstack([outline[upper_vermilion * samples:lower_vermilion * samples + 1],
                      mouth_corner + xy([-1.0, 4.0]), mouth_corner + xy([-1.0, -4.0])])
    # The neck's top edge runs hidden inside the head (behind the ear, through the jaw angle).
    neck = _catmull_rom([sella + xy([-10.0, 15.0]), gonion + xy([5.0, -5.0]),
                         soft_menton + xy([-16.0, -2.0]),
                         soft_menton + xy([-20.0, 30.0]), soft_menton + xy([-24.0, 250.0])], 4)
    neck = np.vstack([neck, sella + xy([-85.0, 250.0]), sella + xy([-75.0, 40.0])])

    eye = nasion + xy([-u(13, 17), u(11, 14)])
    ear_angle = u(5, 20)
    shapes = {
        'outline': outline, 'neck': neck, 'lips': lips,
        'mouth': np.vstack([outline[stomion_index * samples], mouth_corner]),
        # The auricle is tall, tilted back at the top, with the canal in its front part.
        'ear': _ellipse(ear_canal + xy([-7.0, -1.0]), (u(11, 13), u(23, 27)), -ear_angle),
        'ear_canal': _ellipse(ear_canal, (2.5, 3.5)),
        # A profile eye is a wedge: closed at the outer corner, open towards the cornea.
        'eye': eye + xy([[-5, 0], [0, -2.5], [3.5, -2.2], [5, 0.5], [3, 2.5], [-1, 2]]),
        'iris': _ellipse(eye + xy([3.0, 0.2]), (1.8, 2.4)),
        'brow': _catmull_rom(eye + xy([[-9, -6], [-2, -9], [5, -7.5]]), 4),
        'nostril': _ellipse(subnasal + xy([-4.0, -2.5]), (3.5, 1.5)),
        'ala': _ellipse(subnasal + xy([-6.0, -6.0]), (6.0, 5.0), 0, 80, 300, 16),
    }
    landmarks = {
        'sella': sella, 'nasion': nasion, 'A point': a_point, 'B point': b_point,
        'upper 1 tip': upper_tip, 'upper 1 apex': upper_apex, 'lower 1 tip': lower_tip,
        'lower 1 apex': lower_apex, 'ANS': ans, 'PNS': pns, 'Gonion': gonion, 'Menton': menton,
        'ST Nasion': st_nasion, 'Tip of the nose': nose_tip, 'Subnasal': subnasal,
        'Upper lip': upper_lip, 'Lower lip': lower_lip, 'ST Pogonion': st_pogonion,
        'gnathion': gnathion}
    return landmarks, shapes


def _placement(rng: np.random.Generator, landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """2x3 affine map from face coordinates to image pixels: random scale, rotation and shift.

    The shift is then pulled back just enough to keep every landmark MARGIN px inside the image.
    """
    centre = np.full(2, CANONICAL_SIZE / 2)
    angle = np.radians(rng.uniform(-10.0, 10.0))
    linear = rng.uniform(0.85, 1.15) * np.array([[np.cos(angle), -np.sin(angle)],
                                                 [np.sin(angle), np.cos(angle)]])
    offset = centre + rng.uniform(-12.0, 12.0, 2) - linear @ centre
    placed = landmarks @ linear.T + offset
    low, high = placed.min(0), placed.max(0)
    offset += np.maximum(MARGIN - low, 0) - np.maximum(high - (CANONICAL_SIZE - MARGIN), 0)
    return np.hstack([linear, offset[:, None]]) * (image_size / CANONICAL_SIZE)


def _colours(rng: np.random.Generator) -> dict:
    """Skin, background, lip, neck and hair colours (RGB floats) for one patient."""
    # Skin tones from dark brown to pale, each channel jittered a little.
    skin = np.clip(np.array([110.0, 70.0, 50.0]) + rng.uniform() * np.array([125.0, 130.0, 125.0])
                   + rng.uniform(-10, 10, 3), 0, 255)
    # Keep the silhouette visible: redraw a background too close to the skin tone.
    background = rng.uniform(15, 240, 3)
    while np.linalg.norm(background - skin) < 90:
        background = rng.uniform(15, 240, 3)
    return {'skin': skin, 'background': background,
            'lip': 0.7 * skin + 0.3 * np.array([170.0, 60.0, 70.0]),
            'neck': skin * rng.uniform(0.68, 0.8), 'hair': np.full(3, rng.uniform(15, 90))}


def _render(rng: np.random.Generator, shapes: dict, matrix: np.ndarray, image_size: int,
            landmarks: dict):
    """Draw the face through the affine `matrix`; returns (RGB uint8 image, float32 depth map)."""
    colours = _colours(rng)
    scale = image_size / CANONICAL_SIZE
    linear, offset = matrix[:, :2], matrix[:, 2]

    def pixels(name):
        # cv2 takes fixed-point coordinates (4 fractional bits): edges land at sub-pixel positions.
        return [np.round((shapes[name] @ linear.T + offset) * 16).astype(np.int32)]

    def fill(target, name, colour):
        cv2.fillPoly(target, pixels(name), tuple(map(float, colour)), cv2.LINE_AA, 4)

    def stroke(name, colour, width, closed=False):
        cv2.polylines(image, pixels(name), closed, tuple(map(float, colour)),
                      max(1, round(width * scale)), cv2.LINE_AA, 4)

    skin = colours['skin']
    image = np.empty((image_size, image_size, 3), np.uint8)
    image[:] = np.round(colours['background']).astype(np.uint8)
    fill(image, 'neck', colours['neck'])
    fill(image, 'outline', skin)
    fill(image, 'lips', colours['lip'])
    stroke('mouth', skin * 0.35, 1.2)
    fill(image, 'ear', skin * 0.92)
    stroke('ear', skin * 0.6, 1.5, closed=True)
    fill(image, 'ear_canal', skin * 0.35)
    fill(image, 'eye', (235, 232, 225))
    fill(image, 'iris', rng.uniform(30, 110, 3))
    stroke('eye', skin * 0.45, 1.0, closed=True)
    stroke('brow', colours['hair'], 2.5)
    fill(image, 'nostril', skin * 0.3)
    stroke('ala', skin * 0.6, 1.2)

    # Lighting: a linear brightness ramp in a random direction, then lens blur and sensor noise
    # (uniform rather than Gaussian noise: it looks the same and is three times cheaper to draw).
    coords = (np.arange(image_size, dtype=np.float32) - image_size / 2) / image_size
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * coords[None, :] + np.sin(direction) * coords[:, None]
    shaded = image.astype(np.float32) * (1 + rng.uniform(-0.5, 0.5) * ramp)[..., None]
    shaded = cv2.GaussianBlur(shaded, (0, 0), rng.uniform(0.3, 1.0) * scale)
    shaded += (rng.random(shaded.shape, dtype=np.float32) - 0.5) * rng.uniform(7.0, 24.0)
    image = np.clip(shaded, 0, 255, out=shaded).astype(np.uint8)

    depth = _depth(rng, shapes, landmarks, matrix, image_size)
    return image, depth


# Half-width of the head (canonical px, about a millimetre each) from the mid-sagittal plane
# towards the camera, and the relief on it: (landmark-relative centre, sigma, change). Negative
# changes are narrow parts (nose, lips, chin, orbit, under the chin) that lie further from the
# camera than the cheek; positive ones stand out (forehead, cheekbone, the soft tissue over the
# mandible). The profile edge itself is the mid-sagittal plane: the surface turns away there.
HEAD_HALF_WIDTH = 62.0
MAX_HALF_WIDTH = 90.0
EDGE_ROUNDING = 9.0         # canonical px over which the surface turns to the profile edge
NECK_HALF_WIDTH, NECK_ROUNDING = 52.0, 25.0
EAR_RELIEF = 14.0


def _relief(landmarks: dict, eye: np.ndarray) -> list:
    """(centre, sigma, change) bumps of the face's relief, from the same geometry as the photo."""
    p = landmarks
    nose = 0.25 * p['ST Nasion'] + 0.45 * p['Tip of the nose'] + 0.3 * p['Subnasal']
    lips = (p['Upper lip'] + p['Lower lip']) / 2 - [4.0, 0.0]
    jaw = [p['Gonion'] * (1 - t) + p['Menton'] * t for t in (0.15, 0.4, 0.65)]
    return [(nose, 9.0, -44.0), (p['Tip of the nose'], 5.0, -8.0), (lips, 8.0, -24.0),
            (p['ST Pogonion'] - [6.0, 0.0], 9.0, -28.0),
            (p['Menton'] + [-10.0, 14.0], 11.0, -26.0),          # under the chin
            (p['nasion'] + [-12.0, -36.0], 20.0, 7.0),          # forehead
            (eye + [-2.0, 15.0], 11.0, 9.0),                     # cheekbone
            (eye + [2.0, 0.0], 6.0, -14.0),                      # orbit
            *[(point - [0.0, 5.0], 7.0, 8.0) for point in jaw],  # soft tissue over the jaw
            *[(point + [0.0, 12.0], 8.0, -16.0) for point in jaw],  # below the jaw line
            (p['Gonion'] + [-2.0, -4.0], 9.0, 6.0)]              # masseter at the jaw angle


def _depth(rng: np.random.Generator, shapes: dict, landmarks: dict, matrix: np.ndarray,
           image_size: int) -> np.ndarray:
    """The depth map (metres, float32) of the face drawn through `matrix`, as a depth camera
    beside the photo camera would see it: NaN where it has no reading.

    The head's surface is its half-width field (HEAD_HALF_WIDTH plus the `_relief` bumps, the
    ear standing out) rounded off towards the profile edge; the neck is a rounder, narrower body
    behind the jaw; the background is a tilted wall. Then what sensors do: mixed depths at the
    silhouette, depth-dependent noise, 1 mm steps, readings lost at steep edges, in the
    projector's shadow beside the profile, on the iris and the brow hair, and in a few blobs.
    """
    u = rng.uniform
    scale = image_size / CANONICAL_SIZE
    linear, offset = matrix[:, :2], matrix[:, 2]

    def mask_of(*names):
        mask = np.zeros((image_size, image_size), np.uint8)
        for name in names:
            points = np.round((shapes[name] @ linear.T + offset) * 16).astype(np.int32)
            cv2.fillPoly(mask, [points], 1, cv2.LINE_8, 4)
        return mask

    head, neck, ear = mask_of('outline'), mask_of('neck'), mask_of('ear')
    # Canonical coordinates of every pixel centre: the inverse of the drawing's affine map.
    grid = np.stack(np.meshgrid(np.arange(image_size), np.arange(image_size)), -1) + 0.5
    canonical = (grid - offset) @ np.linalg.inv(linear).T
    eye = shapes['iris'].mean(0)
    width = np.full((image_size, image_size), HEAD_HALF_WIDTH)
    for centre, sigma, change in _relief(landmarks, eye):
        squared = ((canonical - centre) ** 2).sum(-1)
        width += change * u(0.8, 1.2) * np.exp(-squared / (2 * sigma ** 2))
    width += EAR_RELIEF * cv2.GaussianBlur(ear.astype(np.float64), (0, 0), 1.5 * scale)
    px_per_unit = np.sqrt(abs(np.linalg.det(linear)))
    inside = cv2.distanceTransform(head, cv2.DIST_L2, 5) / px_per_unit
    half = np.clip(width, 2.0, MAX_HALF_WIDTH) * np.sqrt(np.minimum(inside / EDGE_ROUNDING, 1.0))
    neck_inside = cv2.distanceTransform(neck, cv2.DIST_L2, 5) / px_per_unit
    neck_half = NECK_HALF_WIDTH * np.sqrt(np.minimum(neck_inside / NECK_ROUNDING, 1.0))

    coords = (np.arange(image_size) - image_size / 2) / image_size
    far = u(1.2, 1.5) + u(-0.1, 0.1) * coords[:, None] + u(-0.05, 0.05) * coords[None, :]
    near = u(0.45, 0.75)             # the point of the head nearest the camera
    depth = np.where(head > 0, near + (MAX_HALF_WIDTH - half) / 1000.0,
                     np.where(neck > 0, near + (MAX_HALF_WIDTH - neck_half) / 1000.0, far))
    depth = cv2.GaussianBlur(depth, (0, 0), 0.6 * scale)          # mixed pixels at the edges
    depth = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0015 * (depth / 0.5) ** 2
    depth = np.round(depth * 1000.0) / 1000.0                     # 1 mm steps

    missing = np.zeros(depth.shape, bool)
    steep = np.hypot(cv2.Sobel(depth, cv2.CV_64F, 1, 0), cv2.Sobel(depth, cv2.CV_64F, 0, 1))
    missing |= (steep > 0.25) & (rng.random(depth.shape) < 0.5)
    body = (head | neck).astype(bool)
    shift = max(1, int(round(u(1.5, 4.0) * scale)))              # projector beside the camera
    shadow = np.zeros_like(body)
    shadow[:, shift:] = body[:, :-shift]
    missing |= shadow & ~body
    for name, chance in (('iris', 0.7), ('brow', 0.4)):
        if rng.random() < chance:
            spot = np.zeros(depth.shape, np.uint8)
            points = np.round((shapes[name] @ linear.T + offset) * 16).astype(np.int32)
            cv2.polylines(spot, [points], name == 'iris', 1, max(1, round(2 * scale)),
                          cv2.LINE_8, 4)
            missing |= spot > 0
    for _ in range(int(rng.integers(1, 5))):
        blob = np.zeros(depth.shape, np.uint8)
        centre = tuple(int(v) for v in rng.integers(0, image_size, 2))
        axes = tuple(max(1, int(round(v * scale))) for v in u(1.0, 3.0, 2))
        cv2.ellipse(blob, centre, axes, float(u(0, 180)), 0, 360, 1, -1)
        missing |= blob > 0
    missing |= rng.random(depth.shape) < 0.003                   # speckle
    depth[missing] = np.nan
    return depth.astype(np.float32)


def _record(rng: np.random.Generator, image_size: int):
    """One patient: (flat RGB image, flat depth map, (19, 2) landmark pixels in standard order)."""
    landmarks, shapes = _face(rng)
    points = np.array([landmarks[name] for name in STANDARD_LANDMARKS]) + NASION_POSITION
    shapes = {name: shape + NASION_POSITION for name, shape in shapes.items()}
    matrix = _placement(rng, points, image_size)
    named = {name: point for name, point in zip(STANDARD_LANDMARKS, points)}
    image, depth = _render(rng, shapes, matrix, image_size, named)
    coords = points @ matrix[:, :2].T + matrix[:, 2]
    return image.reshape(-1, 3), depth.reshape(-1), coords


def _assign_splits(num_patients: int, split_fractions) -> list[str]:
    """Interleave train/dev/test so that every prefix of records follows the fractions closely.

    Each record goes to the split furthest behind its share, so record i's split does not depend on
    how many records follow, and with the default fractions dev and test each get one of the first
    10.
    """
    fractions = np.asarray(split_fractions, float)
    if fractions.shape != (len(SET_VALUES),) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f'split_fractions must be three non-negative numbers for {SET_VALUES}, '
                         f'got {split_fractions!r}')
    fractions = fractions / fractions.sum()
    counts = np.zeros(len(SET_VALUES))
    splits = []
    for index in range(1, num_patients + 1):
        chosen = int(np.argmax(index * fractions - counts))
        counts[chosen] += 1
        splits.append(SET_VALUES[chosen])
    return splits


def make_demo_dataframe(num_patients: int = 300, seed: int = 0, image_size: int = 224,
                        split_fractions=(0.8, 0.1, 0.1)) -> pd.DataFrame:
    """A synthetic dataset in the layout of `train_data_pure_depth.pkl` (see the module docstring).

    Deterministic for a given seed; record i is the same whatever `num_patients` is, because each
    patient draws from its own child generator and splits are assigned prefix by prefix.
    """
    if num_patients < 1:
        raise ValueError(f'num_patients must be at least 1, got {num_patients}')
    if image_size < 32:
        raise ValueError(f'image_size must be at least 32 pixels, got {image_size}')
    splits = _assign_splits(num_patients, split_fractions)
    images, depths, all_coords = zip(*(
        _record(rng, image_size) for rng in np.random.default_rng(seed).spawn(num_patients)))
    coords = np.stack(all_coords)
    classes = [skeletal_class(sna_snb_anb(STANDARD_LANDMARKS, points)['ANB']) for points in coords]
    data = {'patient_id': [f'demo_{index + 1:04d}' for index in range(num_patients)],
            'Image': list(images), 'depth_feature': list(depths), 'set': splits,
            'class': np.array(classes, np.int64)}
    for index, name in enumerate(COLUMN_LANDMARK_NAMES):
        data[f'{name}_x'] = coords[:, index, 0]
        data[f'{name}_y'] = coords[:, index, 1]
    return pd.DataFrame(data, columns=COLUMNS)


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Pickle `frame` to `path` so that readers never see a half-written file (parents created).

    atomic_path's temporary file ends in the same name, so pandas infers the same compression for
    it as a reader will for the final file.
    """
    with atomic_path(str(path)) as temporary:
        frame.to_pickle(temporary)


def write_demo_pickle(path, num_patients: int = 300, seed: int = 0,
                      image_size: int = 224) -> Path:
    """Generate the demo dataset and pickle it atomically to `path` (parent folders are created)."""
    path = Path(path)
    _write_atomically(make_demo_dataframe(num_patients, seed, image_size), path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m cephalometric.data.demo',
        description='Write a synthetic lateral-face dataset in the layout of '
                    'train_data_pure_depth.pkl, for trying the pipeline without the private data.')
    parser.add_argument('--out', type=Path, required=True,
                        help='pickle to write, e.g. data/demo/train_data_pure_depth.pkl')
    parser.add_argument('--num-patients', type=int, default=300, help='records (default 300)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--image-size', type=int, default=224,
                        help='square image side in pixels (default 224, as the real data)')
    args = parser.parse_args(argv)
    if args.num_patients < 1:
        raise UserError(f'--num-patients must be at least 1, got {args.num_patients}')
    if args.seed < 0:
        raise UserError(f'--seed must be a non-negative integer, got {args.seed}')
    if args.image_size < 32:
        raise UserError(f'--image-size must be at least 32 pixels, got {args.image_size}')
    if args.out.is_dir():
        raise UserError(f'--out {args.out} is a folder; give a file path such as '
                        f'{args.out / "train_data_pure_depth.pkl"}')
    frame = make_demo_dataframe(args.num_patients, args.seed, args.image_size)
    try:
        _write_atomically(frame, args.out)
    except OSError as error:
        raise UserError(f'cannot write {args.out}: {error.strerror or error}') from error
    splits = frame['set'].value_counts()
    classes = frame['class'].value_counts()
    print(f'wrote {args.out}: {len(frame)} records '
          f'({", ".join(f"{splits.get(name, 0)} {name}" for name in SET_VALUES)}; '
          f'{", ".join(f"class {k}: {classes.get(k, 0)}" for k in (1, 2, 3))})')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
