"""The refinement stage: patches around each landmark, re-located at a finer scale.

Networks here are stand-ins with a known answer where geometry is what is tested (a "network"
that puts its heatmap peak on the brightest input pixel: its precision is its input's
resolution, as a trained network's is bounded by it), and the project's own random-weight model
where the files are (checkpoint, ONNX, the off switch).
"""
import shutil

import numpy as np
import pytest

from cephalometric.errors import UserError
from cephalometric.prediction.framing import Framing


class BrightestPixelNet:
    """(N, C, h, w) -> (N, K, h/4, w/4) heatmaps, every channel a Gaussian (sigma 1.5 heatmap
    px) on the input's brightest pixel: an ideal detector limited to its input's pixel grid."""

    name, device = 'fake', 'cpu'

    def __init__(self, landmarks: int):
        self.landmarks = landmarks

    def __call__(self, batch):
        n, _, h, w = batch.shape
        ys, xs = np.mgrid[0:h // 4, 0:w // 4].astype(np.float32)
        out = np.zeros((n, self.landmarks, h // 4, w // 4), np.float32)
        for i in range(n):
            y, x = np.unravel_index(int(np.argmax(batch[i, 0])), (h, w))
            # input pixel (x, y) is heatmap position x / 4 (MSRAHeatmap's stride, no offset)
            out[i] = np.exp(-((xs - x / 4) ** 2 + (ys - y / 4) ** 2) / (2 * 1.5 ** 2))
        return out


def _settings(landmarks: int, input_size: int, patch: float = 0.1):
    names = [f'p{i}' for i in range(landmarks)]
    return {'landmark_names': names, 'input_size': [input_size, input_size],
            'bbox_padding': 1.1, 'mean': [0.0, 0.0, 0.0], 'std': [1.0, 1.0, 1.0],
            'decoder': {'heatmap_size': [input_size // 4] * 2, 'unbiased': True,
                        'blur_kernel_size': 7},
            'refinement': {'input_size': [64, 64], 'patch': patch,
                           'decoder': {'unbiased': True, 'blur_kernel_size': 7}}}


def _dot_image(x: float, y: float, size: int = 224) -> np.ndarray:
    """A small bright Gaussian dot centred at (x, y) (sub-pixel) on a dark picture."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dot = 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.2 ** 2))
    return np.repeat(np.clip(dot, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_refinement_lands_closer_than_the_landmark_model_alone():
    from cephalometric.prediction.predictor import LandmarkPredictor
    settings = _settings(1, 64)   # 64 px input on a 224 px image: 3.85 image px per input px
    predictor = LandmarkPredictor.from_backend(settings, BrightestPixelNet(1),
                                               refine_network=BrightestPixelNet(1))
    rng = np.random.default_rng(0)
    coarse_errors, refined_errors = [], []
    for x, y in rng.uniform(40, 184, (20, 2)):
        image, truth = _dot_image(x, y), np.array([x, y])
        coarse = predictor.coarse_predictor()([image])[0].keypoints[0]
        refined = predictor([image])[0].keypoints[0]
        coarse_errors.append(np.linalg.norm(coarse - truth))
        refined_errors.append(np.linalg.norm(refined - truth))
    coarse_mre, refined_mre = np.mean(coarse_errors), np.mean(refined_errors)
    print(f'coarse {coarse_mre:.2f} px, refined {refined_mre:.2f} px')
    assert coarse_mre > 0.5                       # the coarse grid does limit the landmark model
    assert refined_mre < 0.4 * coarse_mre         # the stated margin: at least 2.5x closer
    assert max(refined_errors) < 1.0


def test_refinement_keeps_the_estimate_where_the_patch_shows_no_landmark():
    from cephalometric.prediction.predictor import LandmarkPredictor

    class Blind(BrightestPixelNet):
        def __call__(self, batch):
            return np.zeros_like(super().__call__(batch))   # peak 0: below REFINE_MIN_SCORE

    settings = _settings(1, 64)
    image = _dot_image(100.3, 120.7)
    alone = LandmarkPredictor.from_backend(settings, BrightestPixelNet(1))
    blind = LandmarkPredictor.from_backend(settings, BrightestPixelNet(1),
                                           refine_network=Blind(1))
    assert np.array_equal(blind([image])[0].keypoints, alone([image])[0].keypoints)


def test_a_mirrored_photograph_is_refined_in_the_direction_the_model_saw():
    from cephalometric.prediction.predictor import LandmarkPredictor

    class Offset(BrightestPixelNet):
        """Finds the dot 4 input px to its right: a direction-dependent model."""
        def __call__(self, batch):
            return super().__call__(np.roll(batch, 4, axis=3))

    settings = _settings(1, 64)
    predictor = LandmarkPredictor.from_backend(settings, BrightestPixelNet(1),
                                               refine_network=Offset(1))
    image = _dot_image(100.0, 120.0)
    prediction = predictor([image])[0]
    plain = prediction.keypoints[0].copy()
    predictor._refine_framed(prediction, image, None,
                             Framing('auto', list(prediction.bbox), mirrored=True))
    side = 0.1 * float(np.max(predictor.box_scale((0, 0, 224, 224))))
    shift = 4 * side / 64
    # refined on the mirrored view, its "to the right" is the photograph's left
    assert plain[0] == pytest.approx(100.0 + shift, abs=0.6)
    assert prediction.keypoints[0][0] == pytest.approx(100.0 - shift, abs=0.6)


def test_a_turned_photograph_is_refined_turned():
    """A tilted face framed in a turned photograph (TILT_DEGREES) is refined in that view: the
    refinement model's "to the right" is then the photograph's "down" (a 90 degree turn,
    counterclockwise), and the point comes back in the photograph's pixels."""
    from cephalometric.prediction.predictor import LandmarkPredictor

    class Offset(BrightestPixelNet):
        """Finds the dot 4 input px to its right: a direction-dependent model."""
        def __call__(self, batch):
            return super().__call__(np.roll(batch, 4, axis=3))

    predictor = LandmarkPredictor.from_backend(_settings(1, 64), BrightestPixelNet(1),
                                               refine_network=Offset(1))
    image = _dot_image(100.0, 120.0)
    prediction = predictor.coarse_predictor()([image])[0]
    found = prediction.keypoints[0].copy()
    predictor._refine_framed(prediction, image, None,
                             Framing('auto', list(prediction.bbox), rotation=90.0))
    side = 0.1 * float(np.max(predictor.box_scale((0, 0, 224, 224))))
    shift = 4 * side / 64
    assert prediction.keypoints[0][0] == pytest.approx(found[0], abs=0.6)
    assert prediction.keypoints[0][1] == pytest.approx(found[1] + shift, abs=0.6)


@pytest.mark.parametrize('signal', ['refine_uncertainty_and_shift', 'spread_and_refine_shift',
                                    'spread'])
def test_a_point_the_refinement_model_moved_far_is_stated_less_sure(signal):
    """A calibration measured with the refinement model scales the root-sum-square of the
    refinement model's own uncertainty (or, in older checkpoints, the landmark model's heatmap
    spread) and the refinement's shift of the point; one measured on the spread alone ignores
    the shift. Both the plain and the framed path say so."""
    from cephalometric.model.settings import validate_settings
    from cephalometric.prediction.predictor import LandmarkPredictor

    class Offset(BrightestPixelNet):
        def __call__(self, batch):   # finds the dot 6 input px to its right
            return super().__call__(np.roll(batch, 6, axis=3))

    settings = validate_settings(dict(_settings(1, 64, patch=0.3), error_calibration={
        'expected_per_spread': [1.0], 'radius90_per_spread': [2.0], 'images': 30,
        'signal': signal}), 'model.pth')
    image = _dot_image(100.0, 120.0)
    for network, moved_far in ((BrightestPixelNet(1), False), (Offset(1), True)):
        predictor = LandmarkPredictor.from_backend(settings, BrightestPixelNet(1),
                                                   refine_network=network)
        coarse = predictor.coarse_predictor()([image])[0].keypoints[0]
        prediction = predictor([image])[0]
        shift = float(np.linalg.norm(prediction.keypoints[0] - coarse))
        assert (shift > 4.0) == moved_far
        base = (prediction.refine_uncertainty if signal == 'refine_uncertainty_and_shift'
                else prediction.spread)
        stated = np.hypot(base, shift) if signal != 'spread' else prediction.spread
        assert np.isfinite(stated).all()
        assert prediction.expected_error == pytest.approx(stated, rel=1e-4)
        assert prediction.radius90 == pytest.approx(2 * stated, rel=1e-4)
        # the framed path (coarse prediction, then refined in the direction framing chose)
        framed = predictor.coarse_predictor()([image])[0]
        predictor._refine_framed(framed, image, None, Framing('auto', list(framed.bbox)))
        assert framed.expected_error == pytest.approx(stated, rel=1e-4)
    if signal != 'spread':   # the far move is what widened it
        assert (prediction.expected_error - base).item() > 0.5
    if signal == 'refine_uncertainty_and_shift':
        # measured with the refinement model: without it (--no-refine), nothing is stated
        alone = predictor.coarse_predictor()([image])[0]
        assert alone.expected_error is None and alone.radius90 is None


def test_a_low_or_wide_refinement_peak_is_less_sure_than_a_sharp_one():
    """The refinement model's uncertainty: its own channel's spread in image pixels, divided by
    the square root of the peak height; a patch showing nothing is as unsure as a flat one."""
    from cephalometric.prediction.refinement import Refiner
    refiner = Refiner(BrightestPixelNet(2), _settings(2, 64)['refinement'], prepare=None)
    size = 16   # heatmap of a 64 px patch
    sharp = gaussian_map(size, 8.0, 1.5)
    maps = np.stack([sharp, 0.25 * sharp, gaussian_map(size, 8.0, 3.0), np.zeros((size, size))])
    heatmaps = np.zeros((4, 2, size, size), np.float32)
    heatmaps[:, 1] = maps   # every patch is landmark 1's; channel 0 is another landmark's
    centres = np.full((4, 2), 50.0, np.float32)
    sides = np.full(4, 32.0, np.float32)   # 2 image px per heatmap px
    _, _, unsure = refiner.postprocess(heatmaps, np.ones(4, int), centres, sides)
    assert unsure[0] == pytest.approx(1.5 * np.sqrt(2) * 2, rel=0.05)   # peak 1: the spread
    assert unsure[1] == pytest.approx(2 * unsure[0], rel=0.01)           # 1/sqrt(0.25)
    assert unsure[2] > 1.5 * unsure[0]
    assert unsure[3] > unsure[2]


def gaussian_map(size: int, centre: float, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.exp(-((xs - centre) ** 2 + (ys - centre) ** 2) / (2 * sigma ** 2))


def test_an_error_calibration_names_a_known_signal():
    from cephalometric.model.settings import validate_settings
    calibration = {'expected_per_spread': [1.0], 'radius90_per_spread': [2.0], 'images': 30}
    older = validate_settings(dict(_settings(1, 64), error_calibration=calibration), 'model.pth')
    assert older['error_calibration']['signal'] == 'spread'   # calibrated before it was named
    with pytest.raises(UserError, match='signal must be one of'):
        validate_settings(dict(_settings(1, 64), error_calibration=dict(
            calibration, signal='__import__("os")')), 'model.pth')


def test_landmark_patch_centres_a_jittered_patch_on_a_visible_landmark():
    from cephalometric.mmpose_plugins.transforms import LandmarkPatch
    keypoints = np.array([[[50.0, 60.0], [150.0, 160.0], [10.0, 10.0]]], np.float32)
    visible = np.array([[1.0, 1.0, 0.0]])
    transform = LandmarkPatch(patch=0.2, jitter=0.1, seed=0)
    offsets = []
    for _ in range(200):
        out = transform(dict(keypoints=keypoints.copy(), keypoints_visible=visible,
                             bbox_center=np.array([[100.0, 100.0]], np.float32),
                             bbox_scale=np.array([[200.0, 180.0]], np.float32)))
        landmark = out['patch_landmark']
        assert landmark in (0, 1)                           # never the invisible one
        assert out['bbox_scale'].tolist() == [[40.0, 40.0]]  # 0.2 of the longer side
        offsets.append(out['bbox_center'][0] - keypoints[0, landmark])
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 0.8 * 20 + 1e-4          # max_offset x half the side
    assert 0.6 * 4 < offsets.std() < 1.4 * 4                 # jitter 0.1 x 40 px per axis
    with pytest.raises(ValueError):
        LandmarkPatch(patch=0.0, jitter=0.1)


def test_patch_and_jitter_follow_the_measured_error():
    from mmengine.config import Config

    from cephalometric.training.config import DEFAULT_CONFIG, refine_patch
    cfg = Config.fromfile(DEFAULT_CONFIG)
    patch, jitter = refine_patch(cfg, validation_mre=6.0, mean_box_side=600.0)
    assert patch == pytest.approx(8 * 6.0 / 600)
    # per-axis sigma of a 2-D Gaussian whose mean radius is the MRE, as a share of the side
    assert jitter * patch * 600 == pytest.approx(6.0 / np.sqrt(np.pi / 2))
    assert refine_patch(cfg, 0.01, 600.0)[0] == 0.04        # bounded below ...
    assert refine_patch(cfg, 500.0, 600.0)[0] == 0.4        # ... and above


def test_a_refinement_epoch_takes_the_landmark_runs_number_of_steps(tmp_path):
    from mmengine.config import Config

    from cephalometric.training.config import DEFAULT_CONFIG, refine_config
    cfg = Config.fromfile(DEFAULT_CONFIG)
    cfg.train_dataloader.batch_size = 8
    cfg.refine_model.patches_per_image = 4
    refine = refine_config(cfg, str(tmp_path), validation_mre=3.0, mean_box_side=240.0)
    loader = refine.train_dataloader
    assert loader.dataset.type == 'RepeatDataset' and loader.dataset.times == 4
    assert loader.batch_size == 32                           # 4x the landmark batch of 8
    assert cfg.train_dataloader.batch_size == 8              # the landmark run's is untouched


@pytest.fixture(scope='module')
def refined_checkpoint(random_model, tmp_path_factory):
    """The random-weight model with a refinement model (its own weights, slightly changed)."""
    import torch

    from cephalometric.model.checkpoint import attach_refine_model, load_published
    path = str(tmp_path_factory.mktemp('refined') / 'refined.pth')
    shutil.copy(random_model['pth'], path)
    state = load_published(path).state_dict
    changed = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in state.items()}
    settings = {'input_size': [64, 64], 'patch': 0.12,
                'decoder': {'unbiased': True, 'blur_kernel_size': 11}}
    attach_refine_model(path, changed, settings, dict(epochs=1, **settings))
    return path


def _face(seed=0):
    from cephalometric.prediction.export import synthetic_face
    return synthetic_face(224, 256)


def test_a_refined_checkpoint_round_trips_and_turns_off(random_model, refined_checkpoint,
                                                        tmp_path):
    from cephalometric.model.checkpoint import load_published
    from cephalometric.prediction.export import export_checked
    from cephalometric.prediction.predictor import LandmarkPredictor
    published = load_published(refined_checkpoint)
    assert published.refine_state_dict is not None
    assert published.settings['refinement']['patch'] == 0.12
    refined = LandmarkPredictor(refined_checkpoint, device='cpu')
    off = LandmarkPredictor(refined_checkpoint, device='cpu', refine=False)
    before = LandmarkPredictor(random_model['pth'], device='cpu')   # a checkpoint without it
    assert refined.refiner is not None and off.refiner is None and before.refiner is None
    image = _face()
    for bbox in ('full', 'auto'):
        # off: exactly the landmark model's predictions, as a checkpoint without the stage
        assert np.array_equal(off.predict([image], bbox=bbox)[0].keypoints,
                              before.predict([image], bbox=bbox)[0].keypoints)
    # ONNX: three files, all read back; the refined landmarks agree with PyTorch within 0.1 px
    out = tmp_path / 'model.onnx'
    _, difference = export_checked(refined_checkpoint, str(out))
    assert difference <= 0.1 and (tmp_path / 'model.refine.onnx').is_file()
    exported = LandmarkPredictor(str(out))
    assert exported.refiner is not None
    assert exported.settings['refinement'] == refined.settings['refinement']
    gap = np.abs(exported.predict([image], bbox='full')[0].keypoints
                 - refined.predict([image], bbox='full')[0].keypoints).max()
    assert gap <= 0.1
    assert LandmarkPredictor(str(out), refine=False).refiner is None
    # the pair rule: without its refinement file the export is refused with one line
    (tmp_path / 'model.refine.onnx').unlink()
    with pytest.raises(UserError, match='refines landmarks with model.refine.onnx, which is not '
                                        'beside it'):
        LandmarkPredictor(str(out))


def test_refinement_weights_without_their_settings_are_refused(refined_checkpoint, tmp_path):
    import torch

    from cephalometric.model.checkpoint import load_checkpoint_file
    data = load_checkpoint_file(refined_checkpoint)
    del data['meta']['inference']['refinement']
    path = tmp_path / 'broken.pth'
    torch.save(data, path)
    from cephalometric.prediction.predictor import LandmarkPredictor
    with pytest.raises(UserError, match='refinement weights without their settings'):
        LandmarkPredictor(str(path), device='cpu')


def test_a_refinement_model_that_does_not_help_is_removed(refined_checkpoint, tmp_path):
    from cephalometric.model.checkpoint import check_refine_model, load_published
    kept, dropped = tmp_path / 'kept.pth', tmp_path / 'dropped.pth'
    shutil.copy(refined_checkpoint, kept)
    shutil.copy(refined_checkpoint, dropped)
    assert check_refine_model(str(kept), with_refinement=2.0, without=2.5)
    published = load_published(str(kept))
    assert published.refine_state_dict is not None
    assert published.settings['refinement']['val_mre_refined'] == 2.0
    assert not check_refine_model(str(dropped), with_refinement=2.5, without=2.5)
    published = load_published(str(dropped))
    assert published.refine_state_dict is None and 'refinement' not in published.settings
    assert published.state_dict.keys() == load_published(refined_checkpoint).state_dict.keys()


def test_an_onnx_refinement_file_without_its_settings_is_refused(random_model, tmp_path):
    from cephalometric.prediction.onnx import export_onnx
    from cephalometric.prediction.predictor import LandmarkPredictor
    predictor = LandmarkPredictor(random_model['pth'], device='cpu')
    (tmp_path / 'm.refine.onnx').write_bytes(b'')   # beside it, but the metadata lacks settings
    export_onnx(predictor.network.net, predictor.settings, str(tmp_path / 'm.onnx'),
                extra_metadata={'refine_model': 'm.refine.onnx'})
    with pytest.raises(UserError, match='names a refinement model but has no refinement '
                                        'settings'):
        LandmarkPredictor(str(tmp_path / 'm.onnx'))


def test_a_refinement_input_size_hrnet_cannot_take_is_refused():
    from mmengine.config import Config

    from cephalometric.training.config import DEFAULT_CONFIG, refine_codec
    cfg = Config.fromfile(DEFAULT_CONFIG)
    assert refine_codec(cfg)['heatmap_size'] == (16, 16)
    cfg.refine_model.input_size = 48
    with pytest.raises(UserError, match='refine_model.input_size must be a positive multiple '
                                        'of 32'):
        refine_codec(cfg)


def test_a_calibration_measured_with_the_refinement_model_travels_and_needs_it(
        refined_checkpoint, tmp_path):
    """The refinement model's uncertainty is stated alike by PyTorch and the ONNX pair, and a
    calibration measured with it states nothing without it: inference.py --no-refine says so."""
    import json

    import cv2

    from cephalometric.model.checkpoint import set_error_calibration
    from cephalometric.prediction.export import export_checked
    from cephalometric.prediction.predictor import LandmarkPredictor
    from tests.helpers import run_script
    path = tmp_path / 'best_MRE.pth'
    shutil.copy(refined_checkpoint, path)
    count = len(LandmarkPredictor(str(path), device='cpu').names)
    set_error_calibration(str(path), {'expected_per_spread': [1.0] * count,
                                      'radius90_per_spread': [2.0] * count, 'images': 30,
                                      'signal': 'refine_uncertainty_and_shift'})
    export_checked(str(path), str(tmp_path / 'model.onnx'))
    image = _face()
    ours = LandmarkPredictor(str(path), device='cpu').predict([image], bbox='full')[0]
    onnx = LandmarkPredictor(str(tmp_path / 'model.onnx')).predict([image], bbox='full')[0]
    assert np.isfinite(ours.refine_uncertainty).all()
    assert np.abs(onnx.radius90 - ours.radius90).max() < 0.05 * float(ours.radius90.max())
    picture = tmp_path / 'face.png'
    cv2.imwrite(str(picture), image[:, :, ::-1])
    for extra, calibrated in (((), True), (('--no-refine',), False)):
        out = tmp_path / f'out{len(extra)}.json'
        result = run_script('inference.py', '--checkpoint', path, '--img-path', picture,
                            '--bbox', 'full', '--json', out, '--out-file',
                            tmp_path / f'out{len(extra)}.jpg', *extra)
        record = json.loads(out.read_text())
        record = record[0] if isinstance(record, list) else record
        assert record['errors_calibrated'] is calibrated
        assert ('no expected errors or intervals are stated' in result.stdout) is not calibrated
