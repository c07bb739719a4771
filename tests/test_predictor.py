"""LandmarkPredictor agrees with stock MMPose, batched with single, ONNX Runtime with PyTorch.

Agreement means every landmark within 0.1 px of the image. No timing is asserted anywhere: the
benchmark only prints its figures.
"""
import json
import re

import numpy as np
import pytest
from conftest import run_script

TOLERANCE_PX = 0.1
BBOXES = [None, (10.0, 20.0, 150.0, 180.0), None, (30.0, 0.0, 190.0, 200.0)]


@pytest.fixture(scope='module')
def checkpoint(trained_run):
    return str(trained_run / 'best_MRE.pth')


@pytest.fixture(scope='module')
def images(demo_dataset):
    from cephalometric.images import find_images, read_rgb
    _, prepared = demo_dataset
    return [read_rgb(p) for p in find_images(str(prepared / 'images'))[:len(BBOXES)]]


@pytest.fixture(scope='module')
def predictor(checkpoint):
    from cephalometric.predictor import LandmarkPredictor
    return LandmarkPredictor(checkpoint, device='cpu')


def keypoints(predictions):
    return np.stack([p.keypoints for p in predictions])


def test_matches_stock_mmpose(checkpoint, images, predictor):
    from mmpose.apis import inference_topdown

    from cephalometric.mmpose_reference import stock_model
    model = stock_model(checkpoint, 'cpu')
    expected = []
    for image, bbox in zip(images, BBOXES):
        boxes = None if bbox is None else np.array([bbox], np.float32)
        result = inference_topdown(model, image[..., ::-1].copy(), boxes, bbox_format='xywh')
        expected.append(result[0].pred_instances.keypoints[0])
    ours = [predictor([image], [bbox])[0].keypoints for image, bbox in zip(images, BBOXES)]
    assert np.abs(np.stack(ours) - np.stack(expected)).max() < TOLERANCE_PX


def test_batched_matches_single(images, predictor):
    single = keypoints(predictor(images, BBOXES, batch_size=1))
    for batch_size in (3, len(images)):
        assert np.abs(keypoints(predictor(images, BBOXES, batch_size=batch_size)) - single).max() \
            < TOLERANCE_PX


@pytest.mark.parametrize('unbiased', [True, False])
def test_vectorised_decode_matches_codec(unbiased):
    import cephalometric.mmcv_compat  # noqa: F401

    from mmpose.codecs import MSRAHeatmap

    from cephalometric.heatmaps import decode_heatmaps
    codec = MSRAHeatmap(input_size=(128, 128), heatmap_size=(32, 32), sigma=2, unbiased=unbiased)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:32, :32]
    centres = rng.uniform(-2, 34, (3, 5, 2, 1, 1))  # some peaks at or past the border
    heatmaps = np.exp(-((xs - centres[:, :, 0]) ** 2 + (ys - centres[:, :, 1]) ** 2) / 8)
    heatmaps = (heatmaps + rng.normal(0, 0.02, heatmaps.shape)).astype(np.float32)
    heatmaps[0, 0] = -1.0  # no positive response: MMPose marks it -1
    points, scores = decode_heatmaps(heatmaps, (128, 128), unbiased, 11)
    for n in range(3):
        expected_points, expected_scores = codec.decode(heatmaps[n])
        assert np.abs(points[n] - expected_points[0]).max() < 1e-3
        assert np.array_equal(scores[n], expected_scores[0])


def test_bad_backend_is_a_user_error(checkpoint):
    from cephalometric.errors import UserError
    from cephalometric.predictor import LandmarkPredictor
    with pytest.raises(UserError, match='backend'):
        LandmarkPredictor(checkpoint, backend='tensorrt')


def test_onnx_export_and_onnxruntime_match_pytorch(checkpoint, images, predictor, tmp_path,
                                                   demo_dataset):
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    import onnx

    from cephalometric.predictor import LandmarkPredictor
    model = tmp_path / 'model.onnx'
    run_script('export_onnx.py', '--checkpoint', checkpoint, '--out', model)
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(model)).metadata_props}
    assert metadata['landmark_names'] == predictor.names
    assert metadata['input_size'] == list(predictor.input_size)

    exported = LandmarkPredictor(str(model))
    assert exported.backend == 'onnxruntime' and exported.names == predictor.names
    reference = keypoints(predictor(images, BBOXES))
    batched = keypoints(exported(images, BBOXES, batch_size=3))
    assert np.abs(batched - reference).max() < TOLERANCE_PX
    in_memory = LandmarkPredictor(checkpoint, device='cpu', backend='onnxruntime')
    assert np.abs(keypoints(in_memory(images, BBOXES)) - reference).max() < TOLERANCE_PX

    # The command line with only the .onnx file.
    _, prepared = demo_dataset
    out = tmp_path / 'landmarks.json'
    image = sorted((prepared / 'images').iterdir())[0]
    run_script('inference.py', '--checkpoint', model, '--img-path', image, '--no-draw',
               '--json', out)
    assert [lm['name'] for lm in json.loads(out.read_text())['landmarks']] == predictor.names


def test_benchmark_runs_end_to_end(checkpoint, demo_dataset):
    _, prepared = demo_dataset
    # One thread: PyTorch's two-thread path slows down badly while other tests load the CPU.
    result = run_script('benchmark.py', '--quick', '--checkpoint', checkpoint,
                        '--images', prepared / 'images', '--device', 'cpu', '--threads', '1')
    lines = result.stdout.strip().splitlines()
    assert 'MMPose inference_topdown' in result.stdout
    assert re.fullmatch(r'inference speedup vs MMPose: \d+\.\d\dx', lines[-1]), lines[-1]
