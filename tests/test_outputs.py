"""The output-folder rule: replace only what this project wrote, never what a run reads."""
import os

import pytest

from cephalometric.errors import UserError
from cephalometric.outputs import MARKER, check_output_folder, staged_output_folder


def publish(out_dir, content='new'):
    with staged_output_folder(out_dir, tool='test') as staging:
        (staging / 'result.txt').write_text(content)


def test_new_folder_is_published_with_marker_and_no_leftovers(tmp_path):
    out = tmp_path / 'out'
    check_output_folder(out, overwrite=False)
    publish(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, 'result.txt']
    assert [p.name for p in tmp_path.iterdir()] == ['out']


def test_existing_folder_needs_overwrite(tmp_path):
    out = tmp_path / 'out'
    publish(out)
    with pytest.raises(UserError, match='--overwrite'):
        check_output_folder(out, overwrite=False)
    check_output_folder(out, overwrite=True)
    publish(out, 'newer')
    assert (out / 'result.txt').read_text() == 'newer'


def test_unrelated_folder_is_never_replaced(tmp_path):
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'my_notes.txt').write_text('precious')
    (notes / 'annotations').mkdir()   # looking like a dataset is not enough
    with pytest.raises(UserError, match='not written by this project'):
        check_output_folder(notes, overwrite=True)
    assert (notes / 'my_notes.txt').read_text() == 'precious'


def test_legacy_marker_is_accepted_only_when_named(tmp_path):
    old = tmp_path / 'old'
    old.mkdir()
    (old / 'summary.json').write_text('{}')
    with pytest.raises(UserError):
        check_output_folder(old, overwrite=True)
    check_output_folder(old, overwrite=True, legacy_markers=['summary.json'])


@pytest.mark.parametrize('relation', ['same', 'parent'])
def test_protected_paths_and_their_parents_are_refused(tmp_path, relation):
    data_root = tmp_path / 'data' / 'root'
    data_root.mkdir(parents=True)
    (data_root / MARKER).write_text('{}')   # even a folder we wrote
    out = data_root if relation == 'same' else tmp_path / 'data'
    with pytest.raises(UserError, match='would replace'):
        check_output_folder(out, overwrite=True, protected=[data_root])
    assert data_root.is_dir()


def test_a_file_or_link_is_not_a_folder(tmp_path):
    target = tmp_path / 'file'
    target.write_text('x')
    with pytest.raises(UserError, match='not a folder'):
        check_output_folder(target, overwrite=True)
    link = tmp_path / 'link'
    os.symlink(tmp_path, link)
    with pytest.raises(UserError, match='not a folder'):
        check_output_folder(link, overwrite=True)


def test_failure_leaves_the_old_folder_and_no_staging(tmp_path):
    out = tmp_path / 'out'
    publish(out, 'old')
    with pytest.raises(RuntimeError):
        with staged_output_folder(out, tool='test') as staging:
            (staging / 'result.txt').write_text('half')
            raise RuntimeError('crash')
    assert (out / 'result.txt').read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['out']


def test_unwritable_parent_is_one_user_error(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / 'a_file' / 'out'       # root ignores permissions: a file as parent
        (tmp_path / 'a_file').write_text('x')
    else:
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o500)
        target = locked / 'out'
    with pytest.raises(UserError, match='cannot write'):
        publish(target)
