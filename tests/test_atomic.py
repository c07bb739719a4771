"""atomic_path: the target holds the old or the complete new content, and no temp file is left."""
import pytest

from cephalometric.atomic import atomic_path


def test_success_replaces_the_file_and_keeps_the_extension(tmp_path):
    target = tmp_path / 'sub' / 'out.json'
    with atomic_path(str(target)) as temporary:
        assert temporary.endswith('out.json') and temporary != str(target)
        open(temporary, 'w').write('new')
    assert target.read_text() == 'new'
    assert [p.name for p in target.parent.iterdir()] == ['out.json']


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'out.json'
    target.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as temporary:
            open(temporary, 'w').write('half')
            raise RuntimeError('crash while writing')
    assert target.read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['out.json']


def test_written_file_respects_the_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        target = tmp_path / 'shared.json'
        with atomic_path(str(target)) as temporary:
            open(temporary, 'w').write('{}')
    finally:
        os.umask(old)
    assert (target.stat().st_mode & 0o777) == 0o644
