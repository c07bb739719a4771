"""LandmarkPredictor agrees with stock MMPose, batched with single, ONNX Runtime with PyTorch.

Agreement means every landmark within 0.1 px of the image. No timing is asserted anywhere: the
benchmark only prints its figures.
"""
import json
import re

import numpy as np
import pytest

from tests.helpers import run_script

TOLERANCE_PX = 0.1
BBOXES = [None, (10.0, 20.0, 150.0, 180.0), None, (30.0, 0.0, 190.0, 200.0)]


@pytest.fixture(scope='module')
def checkpoint(trained_run):
    return str(trained_run / 'best_MRE.pth')


@pytest.fixture(scope='module')
def images(demo_dataset):
    from cephalometric.data.images import find_images, read_rgb
    _, prepared = demo_dataset
    return [read_rgb(p) for p in find_images(str(prepared / 'images'))[:len(BBOXES)]]


@pytest.fixture(scope='module')
def predictor(checkpoint):
    from cephalometric.prediction.predictor import LandmarkPredictor
    return LandmarkPredictor(checkpoint, device='cpu')


def keypoints(predictions):
    return np.stack([p.keypoints for p in predictions])


def test_matches_stock_mmpose(checkpoint, images, predictor):
    from mmpose.apis import inference_topdown

    from cephalometric.evaluation.mmpose_reference import stock_model
    model = stock_model(checkpoint, 'cpu')
    expected = []
    for image, bbox in zip(images, BBOXES):
        boxes = None if bbox is None else np.array([bbox], np.float32)
        result = inference_topdown(model, image[..., ::-1].copy(), boxes, bbox_format='xywh')
        expected.append(result[0].pred_instances.keypoints[0])
    # the landmark model is what MMPose runs (the refinement stage comes after it)
    coarse = predictor.coarse_predictor()
    ours = [coarse([image], [bbox])[0].keypoints for image, bbox in zip(images, BBOXES)]
    assert np.abs(np.stack(ours) - np.stack(expected)).max() < TOLERANCE_PX


def test_batched_matches_single(images, predictor):
    single = keypoints(predictor(images, BBOXES, batch_size=1))
    for batch_size in (3, len(images)):
        assert np.abs(keypoints(predictor(images, BBOXES, batch_size=batch_size)) - single).max() \
            < TOLERANCE_PX


@pytest.mark.parametrize('unbiased,kernel', [(True, 11), (False, 11), (True, 7)])
def test_vectorised_decode_matches_codec(unbiased, kernel):
    import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401

    from mmpose.codecs import MSRAHeatmap

    from cephalometric.prediction.heatmaps import decode_heatmaps
    codec = MSRAHeatmap(input_size=(128, 128), heatmap_size=(32, 32), sigma=2, unbiased=unbiased,
                        blur_kernel_size=kernel)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:32, :32]
    centres = rng.uniform(-2, 34, (3, 5, 2, 1, 1))  # some peaks at or past the border
    heatmaps = np.exp(-((xs - centres[:, :, 0]) ** 2 + (ys - centres[:, :, 1]) ** 2) / 8)
    heatmaps = (heatmaps + rng.normal(0, 0.02, heatmaps.shape)).astype(np.float32)
    heatmaps[0, 0] = -1.0  # no positive response: MMPose marks it -1
    points, scores = decode_heatmaps(heatmaps, (128, 128), unbiased, kernel)
    for n in range(3):
        expected_points, expected_scores = codec.decode(heatmaps[n])
        assert np.abs(points[n] - expected_points[0]).max() < 1e-3
        assert np.array_equal(scores[n], expected_scores[0])


def test_bad_backend_is_a_user_error(checkpoint):
    from cephalometric.errors import UserError
    from cephalometric.prediction.predictor import LandmarkPredictor
    with pytest.raises(UserError, match='backend'):
        LandmarkPredictor(checkpoint, backend='tensorrt')


def test_onnx_export_and_onnxruntime_match_pytorch(checkpoint, images, predictor, tmp_path,
                                                   demo_dataset):
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    import onnx

    from cephalometric.prediction.predictor import LandmarkPredictor
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


def _with_framing_model(checkpoint, path, change):
    """A copy of `checkpoint` whose framing model is its own network changed by `change`."""
    import shutil

    from cephalometric.model.checkpoint import attach_framing_model, load_published
    shutil.copy(checkpoint, path)
    state = load_published(str(path)).state_dict
    attach_framing_model(str(path), {k: change(k, v) for k, v in state.items()}, {'epochs': 1})
    return str(path)


def test_framing_model_finds_the_face_and_the_landmark_model_measures(checkpoint, images,
                                                                      predictor, tmp_path):
    import torch

    from cephalometric.model.checkpoint import load_published
    from cephalometric.prediction.predictor import LandmarkPredictor
    assert load_published(checkpoint).framing_state_dict is None
    assert predictor.framing_network is None
    assert predictor.framing_predictor() is predictor
    # A framing model that sees nothing (its heatmap layer is zero): confidence 0, no face.
    blind = _with_framing_model(checkpoint, tmp_path / 'blind.pth', lambda k, v: (
        torch.zeros_like(v) if k.startswith('head.final_layer') else v))
    with_blind = LandmarkPredictor(blind, device='cpu')
    assert with_blind.framing_network is not None
    alone = predictor.predict(images[:1])[0]
    found = with_blind.predict(images[:1])[0]
    assert alone.framing['mean_score'] > 0.05
    assert found.framing['mean_score'] == 0 and 'no face found' in found.framing['review_reason']
    # ... while the landmarks on a given box are still the landmark model's
    box = (10.0, 20.0, 150.0, 180.0)
    assert np.abs(with_blind.predict(images[:1], box)[0].keypoints
                  - predictor.predict(images[:1], box)[0].keypoints).max() < 1e-4


def test_onnx_export_writes_the_framing_model_beside_and_refuses_it_elsewhere(
        checkpoint, images, tmp_path):
    pytest.importorskip('onnxruntime')
    import torch

    import export_onnx
    from cephalometric.errors import UserError, run_cli
    from cephalometric.prediction.onnx import export_onnx as export
    from cephalometric.prediction.predictor import LandmarkPredictor
    generator = torch.Generator().manual_seed(0)
    noisy = _with_framing_model(checkpoint, tmp_path / 'noisy.pth', lambda k, v: (
        v + 0.01 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v))
    model = tmp_path / 'out' / 'model.onnx'
    assert run_cli(export_onnx.main, ['--checkpoint', noisy, '--out', str(model)]) == 0
    refined = LandmarkPredictor(noisy, device='cpu').refine_network is not None
    assert sorted(p.name for p in model.parent.iterdir()) == ['model.framing.onnx', 'model.onnx'] \
        + (['model.refine.onnx'] if refined else [])
    exported = LandmarkPredictor(str(model))
    reference = LandmarkPredictor(noisy, device='cpu')
    for ours, theirs in ((exported, reference),
                         (exported.framing_predictor(), reference.framing_predictor())):
        assert np.abs(keypoints(ours(images, BBOXES)) - keypoints(theirs(images, BBOXES))).max() \
            < TOLERANCE_PX
    assert not np.allclose(keypoints(exported(images, BBOXES)),
                           keypoints(exported.framing_predictor()(images, BBOXES)))
    # the .onnx alone: one line saying to keep the two together
    alone = tmp_path / 'alone'
    alone.mkdir()
    (alone / 'model.onnx').write_bytes(model.read_bytes())
    with pytest.raises(UserError, match='not beside it'):
        LandmarkPredictor(str(alone / 'model.onnx'))
    # metadata is data: a path out of the folder is refused, not followed
    for name in ('../model.framing.onnx', '/etc/passwd.onnx', 'model.framing.pth'):
        crafted = tmp_path / 'crafted.onnx'
        export(reference.network.net, reference.settings, str(crafted),
               extra_metadata={'framing_model': name})
        with pytest.raises(UserError, match='not a file name ending in .onnx'):
            LandmarkPredictor(str(crafted))


def test_a_framing_state_that_is_not_weights_is_one_line(checkpoint, tmp_path):
    from cephalometric.errors import UserError
    from cephalometric.prediction.predictor import LandmarkPredictor
    odd = _with_framing_model(checkpoint, tmp_path / 'odd.pth', lambda k, v: 'not a tensor')
    with pytest.raises(UserError, match='framing_state_dict is not a dict of tensors'):
        LandmarkPredictor(odd, device='cpu')
