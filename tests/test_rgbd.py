"""RGB-D (--image-source rgbd): storage, alignment of photo and depth under augmentation, the
4-channel model from preparation to inference (PyTorch and ONNX), refusals of a missing depth."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from cephalometric.data.demo import write_demo_pickle
from cephalometric.data.depth import clean_depth, depth_channel, match_depth_files, read_depth_file
from cephalometric.errors import UserError, run_cli
from cephalometric.landmarks import STANDARD_LANDMARKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--no-pretrained', '--epochs', '1', '--batch-size', '4', '--input-size', '64',
        '--workers', '0', '--device', 'cpu', '--framing-epochs', '0', '--warmup-iters',
        '5']


def prepare(*argv):
    from prepare_cephalometric_data import main
    return run_cli(main, [str(a) for a in argv])


@pytest.fixture(scope='module')
def rgbd_run(tmp_path_factory):
    """A 20-patient demo table prepared as rgbd and as rgb, and a 1-epoch RGB-D model with a
    1-epoch framing model."""
    root = tmp_path_factory.mktemp('rgbd')
    table = write_demo_pickle(root / 'demo.pkl', num_patients=20, seed=4, image_size=96)
    assert prepare('--input', table, '--out-dir', root / 'rgbd', '--image-source', 'rgbd') == 0
    assert prepare('--input', table, '--out-dir', root / 'rgb') == 0
    from cephalometric.training.run import train
    assert run_cli(train, ['--data-root', str(root / 'rgbd'), '--work-dir', str(root / 'run'),
                           *TINY, '--framing-epochs', '1']) == 0
    return root


# -- storage -------------------------------------------------------------------------------------

def test_prepare_stores_each_depth_map_losslessly_beside_its_photo(rgbd_run):
    table = pd.read_pickle(rgbd_run / 'demo.pkl')
    coco = json.loads((rgbd_run / 'rgbd' / 'annotations' / 'train.json').read_text())
    assert coco['info']['inputs'] == ['rgb', 'depth']
    by_id = dict(zip(table['patient_id'], table['depth_feature']))
    for image in coco['images']:
        assert image['depth_file'] == image['file_name'].replace('.png', '.npy')
        stored = np.load(rgbd_run / 'rgbd' / 'images' / image['depth_file'], allow_pickle=False)
        original = by_id[image['patient_id']].reshape(96, 96)
        assert stored.dtype == np.float32 and stored.shape == (96, 96)
        assert np.array_equal(stored, original, equal_nan=True)    # the demo holes are NaN
        assert np.isnan(stored).any()
    # rgb datasets carry no depth and no inputs key: exactly as before.
    plain = json.loads((rgbd_run / 'rgb' / 'annotations' / 'train.json').read_text())
    assert 'inputs' not in plain['info'] and 'depth_file' not in plain['images'][0]
    assert not list((rgbd_run / 'rgb' / 'images').glob('*.npy'))


def test_missing_readings_become_nan_and_channel_zero():
    raw = np.array([[0.5, 0.0, -1.0], [np.inf, np.nan, 0.7], [0.6, 0.55, 0.65]])
    cleaned = clean_depth(raw)
    assert np.isnan(cleaned[[0, 0, 1, 1], [1, 2, 0, 1]]).all()
    channel = depth_channel(cleaned)
    assert (channel[np.isnan(cleaned)] == 0).all()
    assert channel[0, 0] == pytest.approx(255.0, abs=3)      # nearest reading
    assert channel[1, 2] == pytest.approx(1.0, abs=3)        # farthest reading
    assert (channel[~np.isnan(cleaned)] >= 1).all()


def test_depth_of_another_size_is_refused(tmp_path, capsys):
    table = pd.read_pickle(write_demo_pickle(tmp_path / 'd.pkl', num_patients=6, image_size=48))
    table.at[2, 'depth_feature'] = np.ones(40 * 40, np.float32)
    table.to_pickle(tmp_path / 'bad.pkl')
    assert prepare('--input', tmp_path / 'bad.pkl', '--out-dir', tmp_path / 'out',
                   '--image-source', 'rgbd') == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and 'demo_0003' in error and 'same size' in error
    assert not (tmp_path / 'out').exists()


def test_depth_files_are_data_never_code(tmp_path):
    import pickle
    path = tmp_path / 'evil.npy'
    with open(path, 'wb') as stream:       # an object array: loading it would unpickle
        np.save(stream, np.array([{'a': 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match='cannot read depth file'):
        read_depth_file(path)
    (tmp_path / 'p.npy').write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError):
        read_depth_file(tmp_path / 'p.npy')


# -- alignment under augmentation --------------------------------------------------------------

def landmark_table(num: int, size: int = 96, seed: int = 0) -> pd.DataFrame:
    """Photos and depth maps drawn from the landmarks themselves: bright dots on the photo, and
    the depth map nearest (smallest) exactly at each landmark."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:size, :size] + 0.5
    rows = []
    for index in range(num):
        points = rng.uniform(20, size - 20, (len(STANDARD_LANDMARKS), 2))
        bumps = np.max([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.2 ** 2))
                        for x, y in points], axis=0)
        photo = np.repeat((255 * bumps).astype(np.uint8)[..., None], 3, axis=2)
        row = {'patient_id': f'p{index}', 'Image': photo.reshape(-1, 3),
               'depth_feature': (1.0 - 0.5 * bumps).astype(np.float32).reshape(-1),
               'set': 'train' if index < num - 2 else 'dev'}
        for name, (x, y) in zip(STANDARD_LANDMARKS, points):
            row[f'{name}_x'], row[f'{name}_y'] = x, y
        rows.append(row)
    return pd.DataFrame(rows)


def test_photo_and_depth_stay_aligned_through_the_training_pipeline(tmp_path):
    """The depth channel (and the photo) must still peak at the transformed landmarks after every
    geometric augmentation: zoom-out, shift, scale, rotation and the affine crop."""
    from mmengine.dataset import Compose

    import cephalometric.mmpose_plugins.transforms  # noqa: F401
    from cephalometric.training.run import build_config, build_parser

    landmark_table(6).to_pickle(tmp_path / 'points.pkl')
    assert prepare('--input', tmp_path / 'points.pkl', '--out-dir', tmp_path / 'data',
                   '--image-source', 'rgbd') == 0
    args = build_parser().parse_args(['--data-root', str(tmp_path / 'data'), '--work-dir',
                                      str(tmp_path / 'w'), '--no-pretrained', '--input-size',
                                      '64'])
    cfg, _, _ = build_config(args)
    steps = [dict(step) for step in cfg.train_dataloader.dataset.pipeline]
    types = [step['type'] for step in steps]
    assert types.index('LoadDepth') == types.index('LoadImage') + 1
    assert types.index('WarpDepth') == types.index('TopdownAffine') + 1
    assert types.index('StackDepth') == types.index('PackPoseInputs') - 1
    for step in steps:                    # always augment, strongly
        if step['type'] == 'RandomBBoxTransform':
            step.update(shift_prob=1.0, rotate_prob=1.0, rotate_factor=40, shift_factor=0.15)
    zoom_out = dict(type='RandomZoomOut', prob=1.0, max_ratio=1.6)
    if 'RandomZoomOut' in types:          # the config's framing augmentation, always on
        assert types.index('RandomZoomOut') > types.index('LoadDepth')
        steps[types.index('RandomZoomOut')].update(zoom_out)
    else:
        steps.insert(types.index('LoadDepth') + 1, zoom_out)
    from mmpose.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    pipeline = Compose(steps[:-1])       # all but PackPoseInputs, to read the keypoints back
    from cephalometric.mmpose_plugins.dataset import CephalometricDataset
    dataset = CephalometricDataset(data_root=str(tmp_path / 'data'),
                                   ann_file='annotations/train.json',
                                   data_prefix=dict(img='images/'), pipeline=[])
    checked = 0
    for repeat in range(3):
        for index in range(len(dataset)):
            np.random.seed(100 * repeat + index)
            results = pipeline(dataset[index])
            image = results['img']
            assert image.shape == (64, 64, 4) and image.dtype == np.float32
            depth, photo = image[..., 3], image[..., :3].mean(-1)
            for x, y in results['transformed_keypoints'][0]:
                col, row = int(np.floor(x)), int(np.floor(y))
                if not (2 <= col < 62 and 2 <= row < 62):
                    continue
                window = (slice(row - 1, row + 2), slice(col - 1, col + 2))
                # the peak is at the landmark: near the top of the whole map, within a pixel
                assert depth[window].max() > 0.6 * depth.max(), (x, y)
                assert photo[window].max() > 0.4 * photo.max(), (x, y)
                checked += 1
    assert checked > 150


def test_rgbd_data_preprocessor_swaps_only_the_photo_and_normalises_depth():
    from cephalometric.mmpose_plugins.rgbd import RGBDDataPreprocessor
    pre = RGBDDataPreprocessor(mean=[100.0, 110.0, 120.0], std=[10.0, 20.0, 30.0])
    inputs = torch.tensor([10.0, 20.0, 30.0, 255.0]).view(4, 1, 1).repeat(1, 4, 4)
    out = pre(dict(inputs=[inputs], data_samples=[_sample()]))['inputs'][0, :, 0, 0]
    expected = [(30 - 100) / 10, (20 - 110) / 20, (10 - 120) / 30, (255 - 127.5) / 127.5]
    assert out.tolist() == pytest.approx(expected)


def _sample():
    from mmpose.structures import PoseDataSample
    return PoseDataSample()


def test_pretrained_rgb_filters_load_and_depth_filters_start_at_zero():
    from types import SimpleNamespace

    from cephalometric.mmpose_plugins.rgbd import DepthInputWeightsHook
    conv = torch.nn.Conv2d(4, 8, 3)
    model = SimpleNamespace(backbone=SimpleNamespace(conv1=conv))
    runner = SimpleNamespace(model=model, logger=SimpleNamespace(info=lambda message: None))
    pretrained = torch.randn(8, 3, 3, 3)
    checkpoint = {'state_dict': {'backbone.conv1.weight': pretrained.clone()}}
    DepthInputWeightsHook().after_load_checkpoint(runner, checkpoint)
    widened = checkpoint['state_dict']['backbone.conv1.weight']
    assert widened.shape == (8, 4, 3, 3)
    assert torch.equal(widened[:, :3], pretrained) and not widened[:, 3].any()
    own = {'state_dict': {'backbone.conv1.weight': torch.randn(8, 4, 3, 3)}}   # resume: as is
    before = own['state_dict']['backbone.conv1.weight'].clone()
    DepthInputWeightsHook().after_load_checkpoint(runner, own)
    assert torch.equal(own['state_dict']['backbone.conv1.weight'], before)


# -- the 4-channel model end to end --------------------------------------------------------------

def test_checkpoint_records_its_inputs_and_predicts_with_depth(rgbd_run, tmp_path):
    from cephalometric.model.checkpoint import load_published
    from cephalometric.prediction.predictor import LandmarkPredictor
    published = load_published(str(rgbd_run / 'run' / 'best_MRE.pth'))
    model, settings = published.model_config, published.settings
    state, framing = published.state_dict, published.framing_state_dict
    assert settings['inputs'] == ['rgb', 'depth'] and len(settings['mean']) == 4
    assert model['backbone']['in_channels'] == 4
    assert state['backbone.conv1.weight'].shape[1] == 4
    # the framing model was fine-tuned from it, depth zoomed out with the photograph
    assert framing['backbone.conv1.weight'].shape[1] == 4
    assert not torch.equal(framing['backbone.conv1.weight'], state['backbone.conv1.weight'])
    from cephalometric.training.config import framing_config
    from cephalometric.training.run import build_config, build_parser
    args = build_parser().parse_args(['--data-root', str(rgbd_run / 'rgbd'), '--work-dir',
                                      str(tmp_path / 'w'), '--no-pretrained'])
    steps = framing_config(build_config(args)[0], str(tmp_path / 'w')).train_dataloader.dataset
    types = [step['type'] for step in steps.pipeline]
    assert types.index('RandomZoomOut') == types.index('LoadDepth') + 1

    import inference
    images = rgbd_run / 'rgbd' / 'images'
    out = tmp_path / 'pictures'
    assert run_cli(inference.main, ['--checkpoint', str(rgbd_run / 'run' / 'best_MRE.pth'),
                                    '--img-path', str(images), '--depth-path', str(images),
                                    '--out-dir', str(out), '--json', str(tmp_path / 'p.json'),
                                    '--device', 'cpu']) == 0
    records = json.loads((tmp_path / 'p.json').read_text())
    assert len(records) == 20 and len(list(out.glob('*.jpg'))) == 20
    assert all(len(record['landmarks']) == 19 for record in records)

    # The predictor crops and normalises exactly as the validation pipeline + data preprocessor.
    predictor = LandmarkPredictor(str(rgbd_run / 'run' / 'best_MRE.pth'), device='cpu')
    import cv2
    photo = cv2.cvtColor(cv2.imread(str(images / 'demo_0001.png')), cv2.COLOR_BGR2RGB)
    depth = read_depth_file(images / 'demo_0001.npy')
    ours = predictor.preprocess(photo, None, depth)[0]
    reference = _pipeline_input(rgbd_run, 'demo_0001.png')
    assert ours.shape == reference.shape == (4, 64, 64)
    assert np.abs(ours - reference).max() < 1e-3


def _pipeline_input(root, file_name):
    """The validation pipeline's normalised 4-channel input for one image of the rgbd data."""
    from mmengine.dataset import Compose
    from mmpose.utils import register_all_modules

    from cephalometric.mmpose_plugins.dataset import CephalometricDataset
    from cephalometric.mmpose_plugins.rgbd import RGBDDataPreprocessor
    from cephalometric.model.checkpoint import load_checkpoint_file, load_published
    register_all_modules(init_default_scope=True)
    config = load_checkpoint_file(str(root / 'run' / 'best_MRE.pth'))['meta']['config']
    dataset = CephalometricDataset(data_root=str(root / 'rgbd'), ann_file='annotations/train.json',
                                   data_prefix=dict(img='images/'), pipeline=[])
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['img_path'].endswith(file_name))
    packed = Compose(config['val_dataloader']['dataset']['pipeline'])(dataset[index])
    settings = load_published(str(root / 'run' / 'best_MRE.pth')).model_config[
        'data_preprocessor']
    settings = {k: v for k, v in settings.items() if k != 'type'}
    batch = RGBDDataPreprocessor(**settings)(dict(inputs=[packed['inputs']],
                                                  data_samples=[packed['data_samples']]))
    return batch['inputs'][0].numpy()


def test_onnx_export_takes_four_channels_and_agrees(rgbd_run, tmp_path):
    import inference
    from cephalometric.prediction.export import export_checked
    from cephalometric.prediction.predictor import LandmarkPredictor
    onnx_path = tmp_path / 'model.onnx'
    _, gap = export_checked(str(rgbd_run / 'run' / 'best_MRE.pth'), str(onnx_path))
    assert gap <= 0.1
    predictor = LandmarkPredictor(str(onnx_path), device='cpu')
    assert predictor.needs_depth
    assert predictor.network.session.get_inputs()[0].shape[1] == 4
    # the framing model goes beside it, 4 channels too; inference frames with it by default
    assert predictor.framing_network.session.get_inputs()[0].shape[1] == 4
    assert (tmp_path / 'model.framing.onnx').is_file()
    image = rgbd_run / 'rgbd' / 'images' / 'demo_0002.png'
    assert run_cli(inference.main, ['--checkpoint', str(onnx_path), '--img-path', str(image),
                                    '--depth-path', str(image.with_suffix('.npy')), '--no-draw',
                                    '--json', str(tmp_path / 'o.json')]) == 0


def test_evaluate_finds_the_datasets_own_depth_maps(rgbd_run, tmp_path):
    import evaluate
    out = tmp_path / 'eval'
    assert run_cli(evaluate.main, ['--checkpoint', str(rgbd_run / 'run' / 'best_MRE.pth'),
                                   '--data-root', str(rgbd_run / 'rgbd'), '--out-dir', str(out),
                                   '--device', 'cpu', '--worst', '0']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['num_images'] == 2 and 'skeletal_class' in metrics


# -- refusals: one line, exit 2, nothing written ----------------------------------------------

def test_inference_without_depth_is_refused(rgbd_run, tmp_path, capsys):
    import inference
    image = rgbd_run / 'rgbd' / 'images' / 'demo_0001.png'
    empty = tmp_path / 'no_depth'
    empty.mkdir()
    checkpoint = str(rgbd_run / 'run' / 'best_MRE.pth')
    for extra, fragment in (([], '--depth-path'), (['--depth-path', str(empty)], 'demo_0001'),
                            (['--depth-path', str(tmp_path / 'nowhere')], 'does not exist')):
        code = run_cli(inference.main, ['--checkpoint', checkpoint, '--img-path', str(image),
                                         '--out-file', str(tmp_path / 'x.jpg'), '--json',
                                         str(tmp_path / 'x.json'), '--device', 'cpu', *extra])
        error = capsys.readouterr().err
        assert code == 2 and error.startswith('error: ') and error.count('\n') == 1, error
        assert fragment in error
        assert not (tmp_path / 'x.jpg').exists() and not (tmp_path / 'x.json').exists()


def test_evaluate_of_an_rgbd_model_on_data_without_depth_is_refused(rgbd_run, tmp_path, capsys):
    import evaluate
    out = tmp_path / 'eval'
    code = run_cli(evaluate.main, ['--checkpoint', str(rgbd_run / 'run' / 'best_MRE.pth'),
                                   '--data-root', str(rgbd_run / 'rgb'), '--out-dir', str(out),
                                   '--device', 'cpu'])
    error = capsys.readouterr().err
    assert code == 2 and error.count('\n') == 1 and '--depth-path' in error
    assert not out.exists()


def test_depth_files_are_matched_by_stem(tmp_path):
    (tmp_path / 'a.npy').write_bytes(b'')
    (tmp_path / 'b.png').write_bytes(b'')
    found = match_depth_files([str(tmp_path / 'x' / 'a.jpg'), str(tmp_path / 'y' / 'b.jpg')],
                              str(tmp_path))
    assert found == [str(tmp_path / 'a.npy'), str(tmp_path / 'b.png')]
    with pytest.raises(UserError, match='no depth map in .* for c.jpg'):
        match_depth_files([str(tmp_path / 'c.jpg')], str(tmp_path))


def test_predictor_agrees_with_mmpose_own_rgbd_pipeline(rgbd_run):
    """MMPose's test pipeline (LoadDepth, WarpDepth, StackDepth, RGBDDataPreprocessor) and our
    predictor give the same landmarks for the same photo and depth map."""
    import cv2

    from cephalometric.evaluation.mmpose_reference import stock_model, stock_predict
    from cephalometric.prediction.predictor import LandmarkPredictor
    checkpoint = str(rgbd_run / 'run' / 'best_MRE.pth')
    stock = stock_model(checkpoint, 'cpu')
    ours = LandmarkPredictor(checkpoint, device='cpu', refine=False)   # what MMPose runs
    for stem in ('demo_0005', 'demo_0011'):
        photo = cv2.cvtColor(cv2.imread(str(rgbd_run / 'rgbd' / 'images' / f'{stem}.png')),
                             cv2.COLOR_BGR2RGB)
        depth = read_depth_file(rgbd_run / 'rgbd' / 'images' / f'{stem}.npy')
        reference = stock_predict(stock, photo, depth)
        predicted = ours([photo], depths=[depth])[0].keypoints
        assert np.abs(predicted - reference).max() < 0.05


def test_rgbd_without_a_depth_column_is_refused(tmp_path, capsys):
    table = pd.read_pickle(write_demo_pickle(tmp_path / 'd.pkl', num_patients=6, image_size=48))
    table.drop(columns=['depth_feature']).to_pickle(tmp_path / 'no_depth.pkl')
    assert prepare('--input', tmp_path / 'no_depth.pkl', '--out-dir', tmp_path / 'out',
                   '--image-source', 'rgbd') == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and 'depth_feature' in error and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('name', ['../../secret.npy', '/etc/passwd', '', None])
def test_a_depth_file_name_leading_out_of_the_dataset_is_refused(rgbd_run, tmp_path, name):
    import shutil

    from cephalometric.data.reader import load_split
    data = tmp_path / 'data'
    shutil.copytree(rgbd_run / 'rgbd', data)
    path = data / 'annotations' / 'val.json'
    coco = json.loads(path.read_text())
    coco['images'][0]['depth_file'] = name
    path.write_text(json.dumps(coco))
    with pytest.raises(UserError, match='depth_file'):
        load_split(str(data), 'val')


def test_mirrored_split_predictions_mirror_the_depth_map_with_its_photo(tmp_path):
    # The calibration's mirrored pass (the face check's mirrored_score_ceiling) shows an RGB-D
    # model each photo and its depth map flipped together; a depth map left as it was would sit
    # on the other side of the face.
    import cv2

    from cephalometric.evaluation.statistics import predict_split_all

    image = np.zeros((6, 8, 3), np.uint8)
    image[:, :2] = 255                                   # bright on the left
    depth = np.tile(np.arange(1, 9, dtype=np.float32), (6, 1))   # deeper to the right
    cv2.imwrite(str(tmp_path / 'a.png'), image)
    np.save(tmp_path / 'a.npy', depth)

    class Recorder:
        def predict(self, images, bbox, batch_size, depths=None):
            self.images, self.depths = images, depths
            return ['prediction'] * len(images)

    recorder = Recorder()
    paths = ([str(tmp_path / 'a.png')], [str(tmp_path / 'a.npy')])
    assert predict_split_all(recorder, paths[0], 4, depth_paths=paths[1]) == ['prediction']
    assert recorder.images[0][0, 0, 0] == 255 and recorder.depths[0][0, 0] == 1
    predict_split_all(recorder, paths[0], 4, depth_paths=paths[1], mirrored=True)
    assert recorder.images[0][0, -1, 0] == 255 and recorder.images[0][0, 0, 0] == 0
    np.testing.assert_array_equal(recorder.depths[0], depth[:, ::-1])
