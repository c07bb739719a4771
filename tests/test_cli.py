"""The options several tools share mean the same and are refused the same way in each."""
import argparse

import pytest

from cephalometric import cli
from cephalometric.errors import UserError, run_cli


def _mains():
    import review_app
    from cephalometric.evaluation.evaluate import main as evaluate
    from cephalometric.prediction.inference import main as inference
    from cephalometric.training.run import train
    return {'inference': inference, 'evaluate': evaluate, 'review_app': review_app.main,
            'train': train}


REQUIRED = {'inference': ['--checkpoint', 'm.pth', '--img-path', 'x.jpg'],
            'evaluate': ['--checkpoint', 'm.pth'],
            'review_app': ['--images', '.', '--out-dir', 'reviewed'],
            'train': []}


@pytest.mark.parametrize('tool', sorted(REQUIRED))
@pytest.mark.parametrize('device', ['gpu', 'cuda:x', 'cuda:-1', 'CPU'])
def test_a_bad_device_is_the_same_one_line_in_every_tool(tool, device, capsys):
    code = run_cli(_mains()[tool], REQUIRED[tool] + ['--device', device])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (f"error: --device must be auto, cpu, cuda or cuda:N, "
                                         f"got '{device}'")


@pytest.mark.parametrize('tool, option, value, fragment', [
    ('inference', '--score-threshold', '2', 'between 0 and 1'),
    ('review_app', '--score-threshold', '-0.1', 'between 0 and 1'),
    ('inference', '--batch-size', '0', 'at least 1'),
    ('evaluate', '--batch-size', '0', 'at least 1'),
    ('inference', '--mm-per-pixel', 'nan', 'positive number'),
    ('review_app', '--mm-per-pixel', '0', 'positive number'),
    ('inference', '--bbox', '1,2,3', 'x,y,w,h'),
    ('evaluate', '--bbox', '1,2,3,4', 'a split has many images'),
])
def test_shared_checks_are_one_line(tool, option, value, fragment, capsys):
    code = run_cli(_mains()[tool], REQUIRED[tool] + [option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and fragment in err
    assert len(err.strip().splitlines()) == 1


def test_one_default_and_help_for_every_tool():
    parser = argparse.ArgumentParser()
    cli.add_options(parser, 'checkpoint', 'device', 'backend', 'batch_size', 'score_threshold',
                    'bbox', 'depth_path', 'mm_per_pixel', required=('checkpoint',))
    args = cli.check_options(parser.parse_args(['--checkpoint', 'model.onnx', '--device',
                                                'cuda:1', '--bbox', '1,2,3,4']))
    assert args.device == 'cuda:1' and args.bbox == (1.0, 2.0, 3.0, 4.0)
    assert args.batch_size == cli.DEFAULTS['batch_size']
    assert args.score_threshold == cli.DEFAULTS['score_threshold']
    assert '.onnx' in parser.format_help()   # evaluate.py once said .pth only
    with pytest.raises(SystemExit):
        parser.parse_args([])                # --checkpoint required where a tool says so


def test_evaluate_help_names_onnx(capsys):
    with pytest.raises(SystemExit):
        _mains()['evaluate'](['--help'])
    assert '.onnx' in capsys.readouterr().out


@pytest.mark.parametrize('visible, device, expected', [
    (None, 'cuda:1', '1'), ('3,5', 'cuda:1', '5'), (None, 'cpu', ''), ('2', 'cuda', '2')])
def test_training_device_picks_that_gpu(visible, device, expected, monkeypatch):
    from cephalometric.training.launch import select_device
    if visible is None:
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    else:
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
    select_device(device)
    import os
    assert os.environ.get('CUDA_VISIBLE_DEVICES') == expected


def test_training_device_refusals(monkeypatch):
    from cephalometric.training.launch import select_device
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0')
    with pytest.raises(UserError, match='only 1 GPU'):
        select_device('cuda:1')
    with pytest.raises(UserError, match='each takes its own'):
        select_device('cuda:0', distributed=True)


def test_first_line():
    from cephalometric.errors import first_line
    assert first_line(ValueError('a\nb')) == 'a'
    assert first_line(ValueError('')) == 'ValueError'
    assert first_line(ValueError('  '), 'none') == 'none'
    assert first_line(ValueError('abcdef'), limit=3) == 'abc'
