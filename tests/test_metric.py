"""MRE / SD / SDR on constructed predictions with hand-computed values."""
import math

import numpy as np
import pytest

from cephalometric.radial_error import radial_errors, summarize_radial_errors

NAMES = ['sella', 'nasion', 'A point']
# Image 1 errors: 5 (3-4-5 triangle), 0, 6; spacing 0.5 mm/px.
# Image 2 errors: 10 (6-8-10), 1, and a huge error on an invisible landmark; no spacing.
TRUTH = np.array([[[0, 0], [10, 10], [20, 20]],
                  [[0, 0], [10, 10], [20, 20]]], float)
PRED = np.array([[[3, 4], [10, 10], [20, 26]],
                 [[6, 8], [11, 10], [120, 20]]], float)
VISIBLE = np.array([[True, True, True], [True, True, False]])
SPACING = np.array([0.5, np.nan])


def test_radial_errors_are_euclidean():
    np.testing.assert_allclose(radial_errors(PRED, TRUTH), [[5, 0, 6], [10, 1, 100]])


def test_pixel_and_millimetre_statistics():
    m = summarize_radial_errors(radial_errors(PRED, TRUTH), VISIBLE, SPACING, NAMES)
    # pixels: visible errors 5, 0, 6, 10, 1 -> mean 22/5; the invisible 100 is ignored
    assert m['MRE'] == pytest.approx(4.4)
    assert m['SD'] == pytest.approx(np.std([5, 0, 6, 10, 1]))
    # millimetres: only image 1 has spacing -> 2.5, 0, 3 mm
    assert m['MRE_mm'] == pytest.approx(5.5 / 3)
    assert m['SD_mm'] == pytest.approx(np.std([2.5, 0, 3]))
    assert m['SDR@2mm'] == pytest.approx(100 / 3)
    assert m['SDR@2.5mm'] == pytest.approx(200 / 3)  # a 2.5 mm error counts as a success
    assert m['SDR@3mm'] == pytest.approx(100.0)
    assert m['SDR@4mm'] == pytest.approx(100.0)
    assert not any(k.endswith('px') and k.startswith('SDR') for k in m)
    # per landmark, pixels over all images, mm over images with spacing
    assert m['MRE/sella'] == pytest.approx(7.5)
    assert m['MRE/nasion'] == pytest.approx(0.5)
    assert m['MRE/A point'] == pytest.approx(6.0)
    assert m['MRE_mm/sella'] == pytest.approx(2.5)
    assert m['MRE_mm/A point'] == pytest.approx(3.0)


def test_pixel_sdr_when_no_spacing():
    m = summarize_radial_errors(radial_errors(PRED, TRUTH), VISIBLE, None, NAMES,
                                sdr_radii_px=(2, 4, 6, 8))
    assert 'MRE_mm' not in m
    assert m['SDR@2px'] == pytest.approx(40.0)  # 0 and 1
    assert m['SDR@4px'] == pytest.approx(40.0)
    assert m['SDR@6px'] == pytest.approx(80.0)  # 5, 0, 6, 1
    assert m['SDR@8px'] == pytest.approx(80.0)  # 10 is still out


def test_nothing_visible_gives_nan_not_an_exception():
    m = summarize_radial_errors(np.ones((1, 2)), np.zeros((1, 2), bool))
    assert math.isnan(m['MRE'])


def test_registered_metric_reads_mmpose_data_samples():
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401

    from mmpose.registry import METRICS

    import mre_metric  # the user's top-level file re-exports the package's metric
    from cephalometric.mmpose_plugins.metric import MeanRadialError

    assert mre_metric.MeanRadialError is MeanRadialError
    metric = METRICS.build(dict(type='MeanRadialError'))
    assert type(metric) is MeanRadialError
    metric.dataset_meta = dict(keypoint_id2name=dict(enumerate(NAMES)))
    samples = []
    for i in range(2):
        spacing = None if np.isnan(SPACING[i]) else SPACING[i]
        samples.append(dict(
            gt_instances=dict(keypoints=TRUTH[i][None], keypoints_visible=VISIBLE[i][None] * 1.0),
            pred_instances=dict(keypoints=PRED[i][None], keypoint_scores=np.ones((1, 3))),
            raw_ann_info=dict(mm_per_pixel=spacing)))
    metric.process([], samples)
    result = metric.evaluate(2)
    assert result['MRE'] == pytest.approx(4.4)
    assert result['MRE_mm'] == pytest.approx(5.5 / 3)
    assert result['MRE/sella'] == pytest.approx(7.5)


def test_the_config_registers_package_modules_only():
    from mmengine.config import Config

    from cephalometric.training.run import DEFAULT_CONFIG

    imports = Config.fromfile(DEFAULT_CONFIG).custom_imports['imports']
    assert imports[0] == 'cephalometric.mmpose_plugins.mmcv_compat'
    assert 'cephalometric.mmpose_plugins.metric' in imports
    assert all(name.startswith('cephalometric.') for name in imports)
