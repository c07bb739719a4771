"""Careless and hostile input to train_cephalometric.py: one `error:` line, exit 2, no leftovers.

Each case runs `run_cli(train, argv)` in this process (no subprocess: the mistakes are caught
before training starts) and asserts the exit status, the single error line and what is on disk.
"""
import os
import pickle

import pytest

from cephalometric.errors import run_cli
from cephalometric.training.run import train

TINY = ['--no-pretrained', '--epochs', '1', '--batch-size', '2', '--input-size', '32',
        '--workers', '0', '--framing-epochs', '0']


@pytest.fixture
def prepared(demo_dataset):
    return str(demo_dataset[1])


def run_train(capsys, *argv):
    code = run_cli(train, [str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.startswith('error: ')]
    return code, lines, captured.err


def assert_one_error(code, lines, err, *fragments):
    assert code == 2, err
    assert 'Traceback' not in err
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize('option, fragment', [
    ('train_dataloader.batchsize=4', "no key 'batchsize'"),          # a typo
    ('train_cfg.max_epochs=many', 'int'),                              # a value of the wrong type
    ('param_scheduler.7.end=5', 'list of 2'),                          # no such list entry
    ('train_cfg.max_epochs.x=1', 'is a value, not a dict'),            # a value is not a section
    ('max_epochs=5', 'use --epochs'),                                  # a named setting
])
def test_bad_cfg_options_are_one_line_and_make_no_work_dir(option, fragment, prepared, tmp_path,
                                                           capsys):
    work_dir = tmp_path / 'wd'
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', work_dir, *TINY,
                                 '--cfg-options', option)
    assert_one_error(code, lines, err, '--cfg-options', fragment)
    assert not work_dir.exists()


def test_load_from_a_text_file_is_one_line(prepared, tmp_path, capsys):
    text = tmp_path / 'weights.pth'
    text.write_text('these are not weights\n')
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', tmp_path / 'wd',
                                 '--load-from', text, *TINY[1:])
    assert_one_error(code, lines, err, '--load-from', 'weights.pth')
    assert not (tmp_path / 'wd').exists()
    assert text.read_text() == 'these are not weights\n'


def test_load_from_a_folder_or_a_missing_file_is_one_line(prepared, tmp_path, capsys):
    for source in (tmp_path, tmp_path / 'missing.pth'):
        code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir',
                                     tmp_path / 'wd', '--load-from', source, *TINY[1:])
        assert_one_error(code, lines, err, '--load-from')
        assert not (tmp_path / 'wd').exists()


class _Payload:
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_load_from_a_pickle_with_a_payload_does_not_run_it(prepared, tmp_path, capsys):
    marker = tmp_path / 'payload-ran'
    payload = _Payload()
    payload.marker = marker
    evil = tmp_path / 'evil.pth'
    with open(evil, 'wb') as stream:
        pickle.dump({'state_dict': {}, 'meta': payload}, stream)
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', tmp_path / 'wd',
                                 '--load-from', evil, *TINY[1:])
    assert_one_error(code, lines, err, '--load-from', 'evil.pth')
    assert not marker.exists()
    assert not (tmp_path / 'wd').exists()


def test_work_dir_that_is_a_file_is_kept_and_refused(prepared, tmp_path, capsys):
    target = tmp_path / 'notes.txt'
    target.write_text('my notes')
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', target, *TINY)
    assert_one_error(code, lines, err, '--work-dir', 'is a file')
    assert target.read_text() == 'my notes'
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', target / 'wd',
                                 *TINY)
    assert_one_error(code, lines, err, '--work-dir', 'under the file')


def test_work_dir_that_cannot_be_written_is_one_line(prepared, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere the permission bits forbid: use /proc instead
        work_dir = '/proc/self/cephalometric-wd'
    else:
        locked = tmp_path / 'locked'
        locked.mkdir()
        locked.chmod(0o555)
        work_dir = locked / 'wd'
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', work_dir, *TINY)
    assert_one_error(code, lines, err, '--work-dir', 'write')
    assert not os.path.exists(work_dir)


@pytest.mark.parametrize('launcher, fragment', [('pytorch', 'torchrun'), ('slurm', 'srun')])
def test_launcher_without_its_launcher_is_one_line(launcher, fragment, prepared, tmp_path, capsys,
                                                   monkeypatch):
    for name in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID',
                 'SLURM_NTASKS', 'SLURM_NODELIST'):
        monkeypatch.delenv(name, raising=False)
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', tmp_path / 'wd',
                                 '--launcher', launcher, *TINY)
    assert_one_error(code, lines, err, f'--launcher {launcher}', fragment)
    assert not (tmp_path / 'wd').exists()


def test_torchrun_without_launcher_pytorch_is_one_line(prepared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', tmp_path / 'wd',
                                 *TINY)
    assert_one_error(code, lines, err, '--launcher pytorch')
    assert not (tmp_path / 'wd').exists()


@pytest.mark.parametrize('option', [['--epochs', '0'], ['--input-size', '48'], ['--lr', '-1'],
                                    ['--sigma', '0'], ['--batch-size', '0'], ['--lr', 'inf'],
                                    ['--lr', 'nan'], ['--sigma', 'inf'], ['--sigma', 'nan'],
                                    ['--warmup-iters', '-1'], ['--workers', '-1']])
def test_impossible_numbers_are_one_line(option, prepared, tmp_path, capsys):
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', tmp_path / 'wd',
                                 *TINY, *option)
    assert_one_error(code, lines, err, option[0])
    assert not (tmp_path / 'wd').exists()


def test_a_start_up_failure_removes_the_work_dir_it_made(prepared, tmp_path, capsys):
    # the key exists, the value names no registered module: the model cannot be built
    broken = ['--cfg-options', 'model.backbone.type=NoSuchBackbone']
    work_dir = tmp_path / 'new' / 'wd'
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', work_dir, *TINY,
                                 *broken)
    assert_one_error(code, lines, err, 'NoSuchBackbone')
    assert not work_dir.exists()
    # a folder the user had is kept as it was: nothing of this run is left in it
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', mine, *TINY,
                                 *broken)
    assert_one_error(code, lines, err, 'NoSuchBackbone')
    assert sorted(os.listdir(mine)) == ['notes.txt']


def test_failed_pretrained_download_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    import torch

    from cephalometric.errors import UserError
    from cephalometric.training.weights import fetch_pretrained
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(UserError, match='--no-pretrained'):
        fetch_pretrained('http://127.0.0.1:9/unreachable.pth')
    leftovers = list((tmp_path / 'hub').rglob('*'))
    assert all(path.is_dir() for path in leftovers), leftovers


def test_a_framing_model_without_validation_or_a_section_is_one_line(prepared, tmp_path, capsys):
    # the framing model starts from best_MRE.pth, which only validation writes: refused up front
    tiny = TINY[:-2]   # all but --framing-epochs 0
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', tmp_path / 'wd',
                                 *tiny, '--framing-epochs', '1', '--cfg-options',
                                 'train_cfg.val_interval=5')
    assert_one_error(code, lines, err, 'val_interval 5', '--framing-epochs 0')
    assert not (tmp_path / 'wd').exists()
    # a config of one's own without a framing_model section cannot be given framing epochs
    from mmengine.config import Config

    from cephalometric.training.run import DEFAULT_CONFIG
    settings = Config.fromfile(DEFAULT_CONFIG).to_dict()
    del settings['framing_model']
    own = tmp_path / 'own_config.py'
    Config(settings).dump(str(own))
    code, lines, err = run_train(capsys, '--config', own, '--data-root', prepared, '--work-dir',
                                 tmp_path / 'wd', *tiny, '--framing-epochs', '2')
    assert_one_error(code, lines, err, 'no framing_model section')
    assert not (tmp_path / 'wd').exists()


# -- a work dir from someone else: read as data, never run ----------------------------------------

class _PoisonedStatistics:
    """Pickles as getattr(HistoryBuffer, '_statistics_methods')['mean'] = <callable>: with a plain
    getattr on the allow-list this plants a function of the file's choosing that MMEngine's logger
    calls later in the run (the stand-in callable here is a harmless `getattr`)."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '_statistics_methods'), None, None, iter(
            [('mean', getattr)])


def _work_dir_to_resume(tmp_path, checkpoint_content):
    import torch
    work_dir = tmp_path / 'colleague_run'
    work_dir.mkdir()
    torch.save(checkpoint_content, work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    return work_dir


def test_resume_from_a_crafted_checkpoint_plants_nothing(prepared, tmp_path, capsys):
    from mmengine.logging import HistoryBuffer
    work_dir = _work_dir_to_resume(tmp_path, {'meta': {'epoch': 1}, 'state_dict': {},
                                              'message_hub': _PoisonedStatistics()})
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', work_dir,
                                 '--resume', *TINY)
    assert_one_error(code, lines, err, 'epoch_1.pth', 'never writes')
    assert HistoryBuffer._statistics_methods.get('mean') is not getattr
    assert sorted(os.listdir(work_dir)) == ['epoch_1.pth', 'last_checkpoint']


def test_resume_state_with_history_buffers_still_loads(tmp_path):
    """The narrow getattr stand-in admits what MMEngine really pickles: HistoryBuffer methods."""
    import torch
    from mmengine.logging import HistoryBuffer, MessageHub

    from cephalometric.model.checkpoint import load_checkpoint_file
    hub = MessageHub('resume-test')
    hub.update_scalar('train/loss', 0.5)
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': {}, 'message_hub': hub.state_dict()}, path)
    loaded = load_checkpoint_file(str(path), training=True)
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    with pytest.raises(Exception):   # a published checkpoint never holds training state
        load_checkpoint_file(str(path))


@pytest.mark.parametrize('text, fragment', [
    ('import os\nos.system("touch {marker}")\n', 'not the plain data'),
    ('x = __import__("os").system("touch {marker}")\n', 'not the plain data'),
    ('custom_imports = dict(imports=["os"], allow_failed_imports=False)\n', "not this project's"),
])
def test_resume_never_executes_the_work_dirs_config(text, fragment, prepared, tmp_path, capsys):
    import torch
    marker = tmp_path / 'config-ran'
    work_dir = tmp_path / 'colleague_run'
    work_dir.mkdir()
    torch.save({'meta': {'epoch': 1}, 'state_dict': {}}, work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    (work_dir / 'resolved_config.py').write_text(text.format(marker=marker))
    code, lines, err = run_train(capsys, '--data-root', prepared, '--work-dir', work_dir,
                                 '--resume', *TINY)
    assert_one_error(code, lines, err, 'resolved_config.py', fragment)
    assert not marker.exists()
