"""End to end on CPU, as a user runs it: prepare -> train -> best_MRE.pth -> resume -> inference."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from tests.helpers import ROOT, TINY_TRAIN_ARGS, run_script


def run_in_process(main, capsys, *args):
    """A tool's main through run_cli in this process, as (returncode, stderr) like run_script's:
    the refusals below need no process of their own (test_missing_prepared_dataset_is_one_line
    and test_prepare's subprocess test check that a real process prints the same one line)."""
    from types import SimpleNamespace

    from cephalometric.errors import run_cli
    capsys.readouterr()
    code = run_cli(main, [str(a) for a in args])
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert 'Traceback' not in result.stderr
    assert lines[-1].startswith('error: '), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


# -- training ------------------------------------------------------------------------------------
def test_training_keeps_best_checkpoint_with_its_metrics(trained_run):
    best = trained_run / 'best_MRE.pth'
    assert best.is_file()
    record = json.loads((trained_run / 'best_MRE.json').read_text())
    assert record['metric'] == 'MRE' and record['epoch'] in (1, 2)
    from cephalometric.training.curves import read_epoch_history
    _, scores = read_epoch_history(str(trained_run))
    assert sorted(scores) == [1, 2]
    assert record['best_score'] == pytest.approx(min(scores.values()))
    assert record['epoch'] == min(scores, key=scores.get)
    metrics = record['metrics']
    assert metrics['MRE'] == pytest.approx(record['best_score'])
    assert {'SD', 'SDR@2px', 'SDR@8px', 'MRE/sella', 'MRE/gnathion'} <= set(metrics)
    # the published model is slim: no optimizer or resume state
    from cephalometric.model.checkpoint import load_checkpoint_file
    checkpoint = load_checkpoint_file(str(best))
    # (and the refinement model's weights when validation kept it)
    assert set(checkpoint) - {'refine_state_dict'} == {'meta', 'state_dict'}
    assert checkpoint['meta']['epoch'] == record['epoch']
    assert checkpoint['meta']['best_metrics']['MRE'] == pytest.approx(record['best_score'])
    assert (trained_run / 'training_curves.png').is_file()
    assert (trained_run / 'resolved_config.py').is_file()


def test_checkpoint_carries_config_and_landmark_names(trained_run):
    from cephalometric.model.checkpoint import load_checkpoint_file
    meta = load_checkpoint_file(str(trained_run / 'best_MRE.pth'))['meta']
    # the config travels as data (a plain dict), never as Python text that loading would run
    assert meta['config']['model']['type'] == 'TopdownPoseEstimator'
    assert 'cfg' not in meta
    assert meta['dataset_meta']['keypoint_id2name'][10] == 'Gonion'


def test_resume_on_a_finished_run_says_so_and_exits_cleanly(trained_run):
    result = run_script('train_cephalometric.py', '--work-dir', trained_run, '--resume')
    assert 'already finished' in result.stdout


def test_resume_continues_with_the_runs_own_settings(trained_run, tmp_path):
    work_dir = tmp_path / 'run'
    shutil.copytree(trained_run, work_dir)
    # last_checkpoint holds an absolute path into the original folder; point it at the copy
    pointer = work_dir / 'last_checkpoint'
    pointer.write_text(str(work_dir / os.path.basename(pointer.read_text().strip())))
    result = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume',
                        '--epochs', '3')
    assert 'resumed epoch: 2' in result.stdout + result.stderr
    assert (work_dir / 'epoch_3.pth').is_file()
    assert 'validation MRE' in result.stdout



# The module names version 0.3 (the flat package) wrote into custom_imports.
OLD_CUSTOM_IMPORTS = ['cephalometric.mmcv_compat', 'cephalometric.dataset', 'cephalometric.hooks',
                      'cephalometric.metric', 'cephalometric.transforms']


def test_a_work_dir_and_checkpoint_of_version_0_3_still_predict_and_resume(trained_run, tmp_path,
                                                                          demo_dataset):
    """0.3 named its flat modules in custom_imports, in resolved_config.py and in best_MRE.pth;
    both still load (thin re-exports at the old paths), predict the same and --resume."""
    from cephalometric.model.checkpoint import load_checkpoint_file
    work_dir = tmp_path / 'run'
    shutil.copytree(trained_run, work_dir)
    pointer = work_dir / 'last_checkpoint'
    pointer.write_text(str(work_dir / os.path.basename(pointer.read_text().strip())))
    resolved = work_dir / 'resolved_config.py'
    text = resolved.read_text()
    for new in ('mmpose_plugins.mmcv_compat', 'mmpose_plugins.dataset', 'training.hooks',
                'mmpose_plugins.metric', 'mmpose_plugins.transforms'):
        assert f"'cephalometric.{new}'" in text
        text = text.replace(f"'cephalometric.{new}'", f"'cephalometric.{new.split('.')[1]}'")
    resolved.write_text(text)
    checkpoint = load_checkpoint_file(str(work_dir / 'best_MRE.pth'))
    checkpoint['meta']['config']['custom_imports']['imports'] = OLD_CUSTOM_IMPORTS
    torch.save(checkpoint, work_dir / 'best_MRE.pth')
    image = next((demo_dataset[1] / 'images').glob('*.png'))
    for folder in (trained_run, work_dir):
        run_script('inference.py', '--checkpoint', folder / 'best_MRE.pth', '--img-path', image,
                   '--json', tmp_path / f'{folder.name}.json', '--no-draw', '--bbox', 'full')
    ours, old = (json.loads((tmp_path / f'{f.name}.json').read_text()) for f in
                 (trained_run, work_dir))
    assert ours['landmarks'] == old['landmarks']   # one image: one record
    result = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume',
                        '--epochs', '3')
    assert 'resumed epoch: 2' in result.stdout + result.stderr
    assert (work_dir / 'epoch_3.pth').is_file()


def test_resume_of_a_finished_landmark_run_trains_only_the_missing_framing_model(trained_run,
                                                                                  tmp_path):
    from cephalometric.model.checkpoint import load_published
    work_dir = tmp_path / 'run'
    shutil.copytree(trained_run, work_dir)
    pointer = work_dir / 'last_checkpoint'
    pointer.write_text(str(work_dir / os.path.basename(pointer.read_text().strip())))
    landmark_state = load_published(str(work_dir / 'best_MRE.pth')).state_dict
    result = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume',
                        '--framing-epochs', '1', '--cfg-options', 'framing_model.flip.prob=0.5')
    output = result.stdout + result.stderr
    assert 'resumed epoch' not in output and 'new best MRE' not in output  # landmarks untouched
    assert 'framing model: 1 epochs with zoom-out, stored in best_MRE.pth' in result.stdout
    published = load_published(str(work_dir / 'best_MRE.pth'))
    state, framing = published.state_dict, published.framing_state_dict
    assert all(torch.equal(state[k], landmark_state[k]) for k in landmark_state)
    assert set(framing) == set(state)
    assert not all(torch.equal(framing[k], state[k]) for k in state)  # it was fine-tuned
    record = json.loads((work_dir / 'best_MRE.json').read_text())
    assert record['framing_model']['epochs'] == 1
    assert record['framing_model']['zoom_out']['type'] == 'RandomZoomOut'
    # it saw both directions: the prior states how the training faces look, for telling them apart
    assert record['framing_model']['flip']['type'] == 'RandomFlip'
    facing = published.settings['framing_prior']['facing']
    assert len(facing) == len(published.settings['landmark_names']) and any(facing)
    assert (work_dir / 'framing' / 'training_curves.png').is_file()
    assert not (work_dir / 'framing' / 'best_MRE.pth').exists()   # one published model
    again = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume',
                       '--framing-epochs', '1')
    assert 'already finished' in again.stdout


def test_training_stores_a_refinement_model_sized_by_the_measured_error(trained_run,
                                                                        demo_dataset):
    from cephalometric.model.checkpoint import load_published
    from cephalometric.training.config import REFINE_PATCH_RANGE
    published = load_published(str(trained_run / 'best_MRE.pth'))
    record = json.loads((trained_run / 'best_MRE.json').read_text())
    info = record['refine_model']
    assert info['epochs'] == 1 and info['input_size'] == [64, 64]
    # the patch: 8 validation MREs of the landmark model, as a share of the padded 224 px box
    expected = 8 * record['best_score'] / (224 * 1.1)
    low, high = REFINE_PATCH_RANGE
    assert info['patch'] == pytest.approx(min(max(expected, low), high))
    assert info['validation_mre'] == pytest.approx(record['best_score'])
    # kept only where it lowered the validation MRE; otherwise gone from the checkpoint
    assert info['kept'] == (info['val_mre_refined'] < info['val_mre_coarse'])
    if info['kept']:
        assert set(published.refine_state_dict) == set(published.state_dict)
        assert published.settings['refinement']['patch'] == pytest.approx(info['patch'])
    else:
        assert published.refine_state_dict is None and 'refinement' not in published.settings
    assert (trained_run / 'refine' / 'training_curves.png').is_file()
    assert not (trained_run / 'refine' / 'best_MRE.pth').exists()     # one published model


def test_resume_of_a_finished_run_trains_only_the_missing_refinement_model(trained_run,
                                                                           tmp_path):
    from cephalometric.model.checkpoint import load_published
    work_dir = tmp_path / 'run'
    shutil.copytree(trained_run, work_dir, ignore=shutil.ignore_patterns('refine'))
    pointer = work_dir / 'last_checkpoint'
    pointer.write_text(str(work_dir / os.path.basename(pointer.read_text().strip())))
    record_path = work_dir / 'best_MRE.json'
    record = json.loads(record_path.read_text())
    del record['refine_model']   # as if the run had stopped before the refinement model
    record_path.write_text(json.dumps(record))
    landmark_state = load_published(str(work_dir / 'best_MRE.pth')).state_dict
    result = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume',
                        '--refine-epochs', '2')
    output = result.stdout + result.stderr
    assert 'resumed epoch' not in output and 'new best MRE' not in output  # landmarks untouched
    assert 'refinement model: val MRE' in result.stdout   # measured, then kept or not
    published = load_published(str(work_dir / 'best_MRE.pth'))
    assert all(torch.equal(published.state_dict[k], landmark_state[k]) for k in landmark_state)
    assert json.loads(record_path.read_text())['refine_model']['epochs'] == 2
    again = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume',
                       '--refine-epochs', '2')
    assert 'already finished' in again.stdout


def test_epochs_scale_the_framing_model_unless_given(tmp_path, demo_dataset):
    from cephalometric.errors import UserError
    from cephalometric.training.config import framing_config, refine_config
    from cephalometric.training.run import build_config, build_parser
    _, prepared = demo_dataset

    def config(*options):
        args = build_parser().parse_args(['--data-root', str(prepared), '--work-dir',
                                          str(tmp_path / 'w'), '--no-pretrained', *options])
        return build_config(args)[0]
    assert config().framing_model.max_epochs == 30                        # with 100 epochs
    # DARK's blur follows the heatmap sigma (MMPose's rule): 11 for the config's 2, 7 for 1.5
    assert config().codec.get('blur_kernel_size', 11) == 11
    assert config('--sigma', '1.5').model.head.decoder['blur_kernel_size'] == 7
    assert config('--epochs', '10').framing_model.max_epochs == 3
    assert config('--epochs', '1').framing_model.max_epochs == 1
    assert config('--epochs', '10', '--framing-epochs', '7').framing_model.max_epochs == 7
    framing = framing_config(config('--epochs', '12', '--framing-epochs', '10',
                                    '--refine-epochs', '2'), 'w')
    # the run's own config states the stages' epochs as given, not scaled by its 10 of 12
    assert framing.framing_model.max_epochs == 10 and framing.refine_model.max_epochs == 2
    refine = refine_config(config('--epochs', '12', '--framing-epochs', '10',
                                  '--refine-epochs', '2'), 'w', 5.0, 100.0)
    assert refine.train_cfg.max_epochs == 2
    assert refine.framing_model.max_epochs == 10 and refine.refine_model.max_epochs == 2
    assert framing.train_cfg.max_epochs == 10 and framing.work_dir == os.path.join('w', 'framing')
    assert framing.load_from == os.path.join('w', 'best_MRE.pth')
    milestones = next(s for s in framing.param_scheduler if s['type'] == 'MultiStepLR')
    assert milestones['milestones'] == [7, 9]                  # 70% and 90%, as the main run
    steps = [step['type'] for step in framing.train_dataloader.dataset.pipeline]
    assert steps[:3] == ['LoadImage', 'RandomZoomOut', 'GetBBoxCenterScale']
    assert 'RandomFlip' not in steps      # flips are the config's option, off by default
    flipped = framing_config(config('--cfg-options', 'framing_model.flip.prob=0.5'), 'w')
    steps = [step['type'] for step in flipped.train_dataloader.dataset.pipeline]
    assert steps[:4] == ['LoadImage', 'RandomZoomOut', 'GetBBoxCenterScale', 'RandomFlip']
    landmark_steps = config('--cfg-options', 'framing_model.flip.prob=0.5').train_dataloader
    assert 'RandomFlip' not in [step['type'] for step in landmark_steps.dataset.pipeline]
    hooks = [hook['type'] for hook in framing.custom_hooks]
    assert 'BestCheckpointHook' not in hooks and 'FramingModelHook' in hooks
    assert framing_config(config('--framing-epochs', '0'), 'w') is None
    with pytest.raises(UserError, match='--framing-epochs must be 0 or more'):
        config('--framing-epochs', '-1')

def test_warmup_iters_sets_the_warm_up_by_name(tmp_path, demo_dataset):
    from cephalometric.errors import UserError
    from cephalometric.training.config import framing_config
    from cephalometric.training.run import build_config, build_parser
    _, prepared = demo_dataset

    def config(*options):
        args = build_parser().parse_args(['--data-root', str(prepared), '--work-dir',
                                          str(tmp_path / 'w'), '--no-pretrained', *options])
        return build_config(args)[0]

    def warmup(cfg):
        return next(s for s in cfg.param_scheduler if s['type'] == 'LinearLR')
    assert warmup(config())['end'] == 200                               # the config's own
    cfg = config('--warmup-iters', '30')
    assert warmup(cfg)['end'] == 30 and warmup(cfg)['start_factor'] == 0.001
    assert warmup(framing_config(cfg, 'w'))['end'] == 30                # the framing run too
    assert warmup(config('--warmup-iters', '0'))['start_factor'] == 1.0   # no ramp at all
    with pytest.raises(UserError, match='--warmup-iters must be 0 or more'):
        config('--warmup-iters', '-1')


@pytest.mark.slow
def test_kill_during_training_then_resume_loses_at_most_the_current_epoch(demo_dataset, tmp_path):
    _, prepared = demo_dataset
    work_dir = tmp_path / 'killed'
    args = [sys.executable, os.path.join(ROOT, 'train_cephalometric.py'), '--data-root',
            str(prepared), '--work-dir', str(work_dir), '--no-pretrained', '--epochs', '4',
            *TINY_TRAIN_ARGS[3:]]
    log = open(tmp_path / 'killed.log', 'w')
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 300
    # wait until epoch 1 is saved and epoch 2 is under way, then kill -9
    while not (work_dir / 'epoch_1.pth').is_file() or not (work_dir / 'last_checkpoint').is_file():
        assert process.poll() is None, (tmp_path / 'killed.log').read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    assert not (work_dir / 'epoch_4.pth').exists()
    result = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume')
    output = result.stdout + result.stderr
    resumed_epoch = int(output.split('resumed epoch: ')[1].split(',')[0])
    assert resumed_epoch >= 1
    assert (work_dir / 'epoch_4.pth').is_file()
    assert (work_dir / 'best_MRE.pth').is_file()


@pytest.mark.slow
def test_sigterm_during_training_stops_cleanly_and_leaves_only_whole_checkpoints(demo_dataset,
                                                                                 tmp_path):
    from cephalometric.model.checkpoint import load_checkpoint_file
    _, prepared = demo_dataset
    work_dir = tmp_path / 'stopped'
    args = [sys.executable, os.path.join(ROOT, 'train_cephalometric.py'), '--data-root',
            str(prepared), '--work-dir', str(work_dir), '--no-pretrained', '--epochs', '6',
            *TINY_TRAIN_ARGS[3:]]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=ROOT, text=True)
    deadline = time.time() + 300
    while not (work_dir / 'epoch_1.pth').is_file():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)    # during epoch 2, or while epoch 1 is being written
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143 and 'Traceback' not in err, err[-2000:]
    for checkpoint in work_dir.glob('epoch_*.pth'):
        assert 'state_dict' in load_checkpoint_file(str(checkpoint), training=True)
    assert not [p for p in work_dir.rglob('*') if '.tmp-' in p.name]
    result = run_script('train_cephalometric.py', '--work-dir', work_dir, '--resume')
    assert (work_dir / 'epoch_6.pth').is_file() and 'validation MRE' in result.stdout


def test_missing_prepared_dataset_is_one_line(tmp_path):
    result = run_script('train_cephalometric.py', '--data-root', tmp_path / 'nothing',
                        '--work-dir', tmp_path / 'wd', '--no-pretrained', check=False)
    assert_one_line_error(result, 'prepare_cephalometric_data.py')
    assert not (tmp_path / 'wd').exists()


def test_unreachable_pretrained_weights_name_both_ways_out(demo_dataset, tmp_path, capsys):
    import train_cephalometric
    _, prepared = demo_dataset
    result = run_in_process(train_cephalometric.main, capsys, '--data-root', prepared,
                            '--work-dir', tmp_path / 'wd', '--load-from',
                            'http://127.0.0.1:9/unreachable.pth')
    assert_one_line_error(result, '--load-from', '--no-pretrained')


def test_resume_without_a_run_is_one_line(tmp_path, capsys):
    import train_cephalometric
    result = run_in_process(train_cephalometric.main, capsys, '--work-dir', tmp_path, '--resume')
    assert_one_line_error(result, 'nothing to resume')


# -- inference -----------------------------------------------------------------------------------
def test_inference_draws_19_labelled_landmarks(trained_run, demo_dataset, tmp_path):
    _, prepared = demo_dataset
    image = sorted((prepared / 'images').glob('*.png'))[0]
    out, out_json = tmp_path / 'out.jpg', tmp_path / 'out.json'
    # --bbox full: a 2-epoch model finds no face to frame; this test is about the drawing.
    result = run_script('inference.py', '--checkpoint', trained_run / 'best_MRE.pth',
                        '--img-path', image, '--out-file', out, '--json', out_json,
                        '--device', 'cpu', '--bbox', 'full')
    assert str(out) in result.stdout
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] >= 224 * 3  # upscaled for legibility
    record = json.loads(out_json.read_text())
    assert record['image'] == str(image)
    assert [lm['name'] for lm in record['landmarks']][:3] == ['sella', 'nasion', 'A point']
    assert len(record['landmarks']) == 19
    # inside the model's view: the image plus the 10% box padding
    assert all(-12 <= lm['x'] <= 236 and -12 <= lm['y'] <= 236 and lm['score'] >= 0
               for lm in record['landmarks'])
    assert {'SNA', 'SNB', 'ANB'} <= set(record['measurements'])
    # a 2-epoch model is unsure of S, N, A and B: then no class, and the note says why
    assert ('skeletal_class' in record['measurements']) != bool(record['skeletal_class_note'])


def test_inference_on_a_folder_writes_one_picture_per_image_and_a_table(trained_run, demo_dataset,
                                                                        tmp_path):
    _, prepared = demo_dataset
    folder = tmp_path / 'photos'
    folder.mkdir()
    for image in sorted((prepared / 'images').glob('*.png'))[:3]:
        shutil.copy(image, folder)
    # a non-square, larger photo works too
    big = cv2.resize(cv2.imread(str(next(folder.glob('*.png')))), (300, 400))
    cv2.imwrite(str(folder / 'big.jpg'), big)
    run_script('inference.py', '--checkpoint', trained_run / 'best_MRE.pth', '--img-path', folder,
               '--out-dir', tmp_path / 'out', '--json', tmp_path / 'all.json', '--csv',
               tmp_path / 'all.csv', '--mm-per-pixel', '0.5', '--batch-size', '2',
               '--bbox', 'full')  # the whole image: a 2-epoch model cannot find a face
    assert len(list((tmp_path / 'out').glob('*_landmarks.jpg'))) == 4
    records = json.loads((tmp_path / 'all.json').read_text())
    assert isinstance(records, list) and len(records) == 4
    big_record = [r for r in records if r['image'].endswith('big.jpg')][0]
    assert max(lm['y'] for lm in big_record['landmarks']) > 224  # original-image pixels
    assert 'upper_lip_E_line_mm' in records[0]['measurements']
    rows = (tmp_path / 'all.csv').read_text().strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith('image,')
    assert ',sella_x,sella_y,sella_score,' in rows[0]


@pytest.mark.parametrize('case', ['checkpoint', 'image', 'folder', 'bbox'])
def test_inference_errors_are_one_line(case, trained_run, tmp_path):
    checkpoint = trained_run / 'best_MRE.pth'
    image = tmp_path / 'x.png'
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    args = {'checkpoint': ['--checkpoint', tmp_path / 'missing.pth', '--img-path', image],
            'image': ['--checkpoint', checkpoint, '--img-path', tmp_path / 'broken.png'],
            'folder': ['--checkpoint', checkpoint, '--img-path', tmp_path / 'empty'],
            'bbox': ['--checkpoint', checkpoint, '--img-path', image, '--bbox', '1,2,3']}[case]
    (tmp_path / 'broken.png').write_text('not an image')
    (tmp_path / 'empty').mkdir()
    result = run_script('inference.py', *args, '--out-dir', tmp_path / 'out', check=False)
    assert_one_line_error(result)
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    import inference
    fake = tmp_path / 'fake.pth'
    fake.write_bytes(b'not a checkpoint')
    image = tmp_path / 'x.png'
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = run_in_process(inference.main, capsys, '--checkpoint', fake, '--img-path', image)
    assert_one_line_error(result, 'checkpoint')


@pytest.mark.parametrize('flag', ['--amp', '--device=cuda'])
def test_gpu_only_options_on_a_cpu_machine_are_one_line(flag, tmp_path, capsys):
    import torch

    import train_cephalometric
    if torch.cuda.is_available():
        pytest.skip('a CUDA GPU is present: these options are valid here')
    result = run_in_process(train_cephalometric.main, capsys, '--work-dir', tmp_path / 'wd', flag)
    assert_one_line_error(result, '--amp' if flag == '--amp' else '--device cpu')
    assert not (tmp_path / 'wd').exists()
