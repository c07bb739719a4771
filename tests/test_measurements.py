"""Clinical measurements on constructed coordinates whose answers are known by hand."""
import math

import numpy as np
import pytest

from cephalometric.landmarks import STANDARD_LANDMARKS
from cephalometric.measurements import (
    ANGLE_LINES,
    MEASUREMENTS,
    angle_deg,
    compute_measurements,
    format_value,
    signed_distance_to_line,
    skeletal_class,
    sna_snb_anb,
)

SIN30, COS30 = 0.5, math.sqrt(3) / 2

# A plausible face looking right (224 x 224 pixels, y down).
FACE = {
    'sella': (62, 78), 'nasion': (150, 64), 'A point': (146, 130), 'B point': (140, 178),
    'upper 1 tip': (150, 157), 'upper 1 apex': (138, 128), 'lower 1 tip': (147, 154),
    'lower 1 apex': (132, 182), 'ANS': (155, 120), 'PNS': (96, 124), 'Gonion': (80, 170),
    'Menton': (135, 206), 'ST Nasion': (160, 62), 'Tip of the nose': (190, 112),
    'Subnasal': (170, 126), 'Upper lip': (173, 144), 'Lower lip': (170, 164),
    'ST Pogonion': (166, 192), 'gnathion': (146, 202)}

ISBI_NAMES = [
    'Sella', 'Nasion', 'Orbitale', 'Porion', 'A point', 'B point', 'Pogonion', 'Menton', 'Gnathion',
    'Gonion', 'Lower incisal incision', 'Upper incisal incision', 'Upper lip', 'Lower lip',
    'Subnasale', 'Soft tissue pogonion', 'PNS', 'ANS', 'Articulare']


def standard(points: dict):
    """Names and coordinates of the 19 standard landmarks; those not in `points` are NaN."""
    names = list(STANDARD_LANDMARKS)
    coords = np.full((len(names), 2), np.nan)
    for name, xy in points.items():
        coords[names.index(name)] = xy
    return names, coords


def mirror(coords, width=224.0):
    out = np.array(coords, float)
    out[:, 0] = width - 1 - out[:, 0]
    return out


# ---- basic geometry ----

def test_angle_deg_right_angle_and_30_60_90_triangle():
    assert angle_deg((0, 0), (1, 0), (0, 1)) == pytest.approx(90)
    # Triangle with vertices (0,0), (sqrt3,0), (0,1): angles 30 at (sqrt3,0), 60 at (0,1).
    a, b, c = (0, 0), (math.sqrt(3), 0), (0, 1)
    assert angle_deg(b, a, c) == pytest.approx(30)
    assert angle_deg(c, a, b) == pytest.approx(60)
    assert angle_deg(a, b, c) == pytest.approx(90)


def test_signed_distance_to_line_sign_follows_anterior():
    # Vertical line x = 10; point at x = 13 is 3 in front when anterior is +x, 3 behind when -x.
    forward, backward = np.array([1.0, 0]), np.array([-1.0, 0])
    assert signed_distance_to_line((13, 5), (10, 0), (10, 20), forward) == pytest.approx(3)
    assert signed_distance_to_line((13, 5), (10, 0), (10, 20), backward) == pytest.approx(-3)
    # Line direction does not matter.
    assert signed_distance_to_line((13, 5), (10, 20), (10, 0), forward) == pytest.approx(3)


# ---- SNA / SNB / ANB / class ----

def sn_ab(a, b):
    """N at (100, 100), S straight behind it at (0, 100); A and B at the given angles from N->S."""
    n = np.array([100.0, 100.0])
    s = (0.0, 100.0)

    def at(deg):  # rotate N->S (pointing -x) downward by `deg`
        r = math.radians(deg)
        return tuple(n + 50 * np.array([-math.cos(r), math.sin(r)]))
    return standard({'sella': s, 'nasion': tuple(n), 'A point': at(a), 'B point': at(b)})


def test_sna_snb_anb_hand_computed_and_class_ii():
    names, coords = sn_ab(90, 60)
    m = compute_measurements(names, coords)
    assert m['SNA'] == pytest.approx(90)
    assert m['SNB'] == pytest.approx(60)
    assert m['ANB'] == pytest.approx(30)
    assert m['skeletal_class'] == 2
    assert sna_snb_anb(names, coords) == pytest.approx({'SNA': 90, 'SNB': 60, 'ANB': 30})


def test_anb_is_negative_when_b_is_ahead_of_a():
    names, coords = sn_ab(78, 83)
    m = compute_measurements(names, coords)
    assert m['ANB'] == pytest.approx(-5)
    assert m['skeletal_class'] == 3


def test_skeletal_class_boundaries_and_custom_thresholds():
    assert skeletal_class(0.0) == 1
    assert skeletal_class(4.0) == 1
    assert skeletal_class(2.0) == 1
    assert skeletal_class(4.001) == 2
    assert skeletal_class(-0.001) == 3
    assert skeletal_class(3.0, thresholds=(-1.0, 2.0)) == 2
    assert skeletal_class(-0.5, thresholds=(-1.0, 2.0)) == 1
    assert skeletal_class(-1.0, thresholds=(-1.0, 2.0)) == 1
    assert skeletal_class(-1.5, thresholds=(-1.0, 2.0)) == 3
    names, coords = sn_ab(83, 80)  # ANB = 3
    assert compute_measurements(names, coords)['skeletal_class'] == 1
    assert compute_measurements(names, coords, class_thresholds=(-1.0, 2.0))['skeletal_class'] == 2


def test_bad_arguments_raise():
    names, coords = sn_ab(83, 80)
    with pytest.raises(ValueError):
        compute_measurements(names, coords, class_thresholds=(4.0, 0.0))
    for bad in (0, -0.1, float('nan')):
        with pytest.raises(ValueError):
            compute_measurements(names, coords, mm_per_pixel=bad)


# ---- plane angles ----

def test_sn_gome_30_degrees_and_palatal_planes():
    names, coords = standard({
        'sella': (0, 0), 'nasion': (100, 0),
        'Gonion': (0, 50), 'Menton': (100 * COS30 * 2, 50 + 100 * SIN30 * 2),   # 30 deg down
        'PNS': (0, 40), 'ANS': (100, 40)})                                       # parallel to SN
    m = compute_measurements(names, coords)
    assert m['SN_GoMe'] == pytest.approx(30)
    assert m['SN_PP'] == pytest.approx(0, abs=1e-9)
    assert m['PP_GoMe'] == pytest.approx(30)


def test_face_height_ratios():
    names, coords = standard({'nasion': (0, 0), 'ANS': (3, 45), 'Menton': (0, 100),
                              'sella': (-60, 0), 'Gonion': (-60, 64)})
    m = compute_measurements(names, coords)
    assert m['LAFH_ratio'] == pytest.approx(100 * math.hypot(3, 55) / 100)
    assert m['jarabak_ratio'] == pytest.approx(64)


# ---- dental ----

def test_incisor_angles_and_distances():
    # S-N horizontal (anterior = +x); N-A and N-B vertical lines at x = 100.
    apex_u = np.array([100.0, 100.0])
    tip_u = apex_u + 20 * np.array([SIN30, COS30])            # 30 deg proclined, tip 10 px ahead
    apex_l = np.array([100.0, 220.0])
    tip_l = apex_l + 20 * np.array([math.sin(math.radians(25)), -math.cos(math.radians(25))])
    names, coords = standard({
        'sella': (0, 0), 'nasion': (100, 0), 'A point': (100, 100), 'B point': (100, 200),
        'upper 1 apex': tuple(apex_u), 'upper 1 tip': tuple(tip_u),
        'lower 1 apex': tuple(apex_l), 'lower 1 tip': tuple(tip_l),
        'Gonion': (0, 220), 'Menton': (150, 220)})
    m = compute_measurements(names, coords, mm_per_pixel=0.5)
    assert m['U1_NA'] == pytest.approx(30)
    assert m['U1_NA_px'] == pytest.approx(10)
    assert m['U1_NA_mm'] == pytest.approx(5)
    assert m['L1_NB'] == pytest.approx(25)
    assert m['L1_NB_px'] == pytest.approx(20 * math.sin(math.radians(25)))
    assert m['U1_SN'] == pytest.approx(120)     # 90 + 30 deg proclination
    assert m['IMPA'] == pytest.approx(115)      # 90 + 25 deg proclination
    # tip->apex vectors: upper points up-back (-30 deg from vertical), lower down-back (25 deg).
    assert m['interincisal'] == pytest.approx(180 - 30 - 25)

    # A retroclined upper incisor (crown tipped back) gives a negative U1-NA.
    names, coords = standard({
        'sella': (0, 0), 'nasion': (100, 0), 'A point': (100, 100),
        'upper 1 apex': (100, 100), 'upper 1 tip': (100 - 10, 100 + 20 * COS30)})
    m = compute_measurements(names, coords)
    assert m['U1_NA'] == pytest.approx(-30)
    assert m['U1_NA_px'] == pytest.approx(-10)


# ---- soft tissue ----

def test_nasolabial_angle():
    names, coords = standard({'Subnasal': (0, 0), 'Tip of the nose': (10, 0), 'Upper lip': (0, 10)})
    assert compute_measurements(names, coords)['nasolabial'] == pytest.approx(90)
    names, coords = standard({'Subnasal': (0, 0), 'Tip of the nose': (10, 0),
                              'Upper lip': (-5, 5 * math.sqrt(3))})
    assert compute_measurements(names, coords)['nasolabial'] == pytest.approx(120)


def e_line_face():
    # E-line is the vertical x = 200; upper lip 5 px behind, lower lip 3 px in front.
    return standard({
        'sella': (0, 0), 'nasion': (100, 0), 'Tip of the nose': (200, 100),
        'ST Pogonion': (200, 200), 'Upper lip': (195, 140), 'Lower lip': (203, 170)})


def test_e_line_sign_and_mm_conversion():
    names, coords = e_line_face()
    m = compute_measurements(names, coords)
    assert m['upper_lip_E_line_px'] == pytest.approx(-5)
    assert m['lower_lip_E_line_px'] == pytest.approx(3)
    assert 'upper_lip_E_line_mm' not in m
    m = compute_measurements(names, coords, mm_per_pixel=0.1)
    assert m['upper_lip_E_line_mm'] == pytest.approx(-0.5)
    assert m['lower_lip_E_line_mm'] == pytest.approx(0.3)


def test_e_line_uses_palatal_plane_when_sella_nasion_missing():
    names, coords = e_line_face()
    coords[names.index('sella')] = np.nan
    coords[names.index('ANS')] = (150, 120)
    coords[names.index('PNS')] = (90, 122)
    assert compute_measurements(names, coords)['upper_lip_E_line_px'] == pytest.approx(-5)
    # Without any anterior reference the signed distances are omitted, unsigned ones are not.
    names, coords = e_line_face()
    coords[names.index('nasion')] = np.nan
    coords[names.index('Subnasal')] = (190, 125)
    m = compute_measurements(names, coords)
    assert 'upper_lip_E_line_px' not in m and 'lower_lip_E_line_px' not in m
    assert 'nasolabial' in m


def test_mirrored_face_gives_the_same_values_and_signs():
    names, coords = standard(FACE)
    original = compute_measurements(names, coords, mm_per_pixel=0.3)
    mirrored = compute_measurements(names, mirror(coords), mm_per_pixel=0.3)
    assert original.keys() == mirrored.keys()
    for key in original:
        assert mirrored[key] == pytest.approx(original[key]), key
    # The face is a plausible one: lips behind the E-line, proclined incisors, Class I.
    assert original['upper_lip_E_line_px'] < 0 and original['lower_lip_E_line_px'] < 0
    assert original['U1_NA'] > 0 and original['L1_NB'] > 0
    assert original['skeletal_class'] == 1


def test_mirrored_e_line_and_incisor_signs():
    names, coords = e_line_face()
    m = compute_measurements(names, mirror(coords, 400))
    assert m['upper_lip_E_line_px'] == pytest.approx(-5)
    assert m['lower_lip_E_line_px'] == pytest.approx(3)


# ---- completeness, omission, aliases ----

def test_standard_set_gives_its_measurements_in_table_order():
    names, coords = standard(FACE)
    m = compute_measurements(names, coords, mm_per_pixel=0.25)
    expected = {
        'SNA', 'SNB', 'ANB', 'skeletal_class', 'SN_GoMe', 'SN_PP', 'PP_GoMe', 'LAFH_ratio',
        'jarabak_ratio', 'U1_NA', 'U1_NA_px', 'U1_NA_mm', 'L1_NB', 'L1_NB_px', 'L1_NB_mm', 'U1_SN',
        'IMPA', 'interincisal', 'nasolabial', 'soft_tissue_convexity', 'upper_lip_E_line_px',
        'upper_lip_E_line_mm', 'lower_lip_E_line_px', 'lower_lip_E_line_mm'}
    assert set(m) == expected
    order = list(MEASUREMENTS)
    assert list(m) == sorted(m, key=order.index)
    assert all(isinstance(v, float) for k, v in m.items() if k != 'skeletal_class')
    assert isinstance(m['skeletal_class'], int)
    # Standard set has no porion/orbitale/pogonion/articulare: those measurements are omitted.
    for key in ('FMA', 'Y_axis', 'facial_angle', 'convexity', 'gonial_angle', 'bjork_sum'):
        assert key not in m


def test_measurements_table_is_complete():
    for key, info in MEASUREMENTS.items():
        assert info.unit in {'deg', 'px', 'mm', '%', 'class'}, key
        assert info.norm and info.description, key
    assert ANGLE_LINES == (('sella', 'nasion'), ('nasion', 'a point'), ('nasion', 'b point'))
    assert format_value('SNA', 82.04) == '82.0 deg'
    assert format_value('skeletal_class', 2) == 'Class II'


def isbi_face():
    # ISBI 2015 landmarks, positioned like FACE plus the points the standard set lacks.
    positions = {
        'Sella': FACE['sella'], 'Nasion': FACE['nasion'], 'Orbitale': (136, 84), 'Porion': (40, 96),
        'A point': FACE['A point'], 'B point': FACE['B point'], 'Pogonion': (146, 192),
        'Menton': FACE['Menton'], 'Gnathion': FACE['gnathion'], 'Gonion': FACE['Gonion'],
        'Lower incisal incision': FACE['lower 1 tip'],
        'Upper incisal incision': FACE['upper 1 tip'],
        'Upper lip': FACE['Upper lip'], 'Lower lip': FACE['Lower lip'],
        'Subnasale': FACE['Subnasal'],
        'Soft tissue pogonion': FACE['ST Pogonion'], 'PNS': FACE['PNS'], 'ANS': FACE['ANS'],
        'Articulare': (72, 112)}
    return list(ISBI_NAMES), np.array([positions[n] for n in ISBI_NAMES], float)


def test_isbi_names_resolve_through_aliases():
    names, coords = isbi_face()
    m = compute_measurements(names, coords, mm_per_pixel=0.1)
    present = {'SNA', 'SNB', 'ANB', 'skeletal_class', 'convexity', 'facial_angle', 'SN_GoMe',
               'SN_PP', 'PP_GoMe', 'FMA', 'Y_axis', 'saddle_angle', 'articular_angle',
               'gonial_angle', 'bjork_sum', 'LAFH_ratio', 'jarabak_ratio', 'U1_NA_px', 'U1_NA_mm',
               'L1_NB_px', 'L1_NB_mm'}
    assert set(m) == present
    # ISBI has no incisor apices, nose tip or soft-tissue nasion: those are omitted, not guessed.
    std = compute_measurements(*standard(FACE), mm_per_pixel=0.1)
    for key in ('SNA', 'SNB', 'ANB', 'SN_GoMe', 'SN_PP', 'U1_NA_px', 'L1_NB_px', 'LAFH_ratio'):
        assert m[key] == pytest.approx(std[key]), key
    assert m['bjork_sum'] == pytest.approx(m['saddle_angle'] + m['articular_angle']
                                           + m['gonial_angle'])
    # Sanity of the directed-line conventions on a plausible face: acute plane angles, not their
    # supplements.
    assert 0 < m['FMA'] < 60 and 40 < m['Y_axis'] < 80 and 70 < m['facial_angle'] < 100
    assert -20 < m['convexity'] < 20


def test_e_line_with_alias_names():
    names = ['S', 'N', 'Pronasale', 'Soft tissue pogonion', 'Labrale superius', 'Labrale inferius']
    coords = np.array([(0, 0), (100, 0), (200, 100), (200, 200), (195, 140), (203, 170)], float)
    m = compute_measurements(names, coords)
    assert m['upper_lip_E_line_px'] == pytest.approx(-5)
    assert m['lower_lip_E_line_px'] == pytest.approx(3)


def test_convexity_sign():
    # N and Pog on the vertical x = 100; A 10 px ahead -> convex (+), 10 px behind -> concave (-).
    for ax, sign in ((110, 1), (90, -1)):
        names = ['Sella', 'Nasion', 'A point', 'Pogonion']
        coords = np.array([(0, 0), (100, 0), (ax, 100), (100, 200)], float)
        m = compute_measurements(names, coords)
        expected = 180 - angle_deg((ax, 100), (100, 0), (100, 200))
        assert m['convexity'] == pytest.approx(sign * expected)
        assert expected > 5


def test_missing_and_nan_landmarks_are_omitted():
    names, coords = standard(FACE)
    coords[names.index('A point')] = (np.nan, 130)
    m = compute_measurements(names, coords)
    for key in ('SNA', 'SNB', 'ANB', 'skeletal_class', 'U1_NA', 'U1_NA_px'):
        assert key not in m
    assert 'SN_GoMe' in m and 'L1_NB' in m
    assert sna_snb_anb(names, coords) == {}
    # Names absent altogether.
    m = compute_measurements(['Tip of the nose', 'Subnasal', 'Upper lip'],
                             np.array([(10, 0), (0, 0), (0, 10)], float))
    assert set(m) == {'nasolabial'}
    assert compute_measurements([], np.zeros((0, 2))) == {}
