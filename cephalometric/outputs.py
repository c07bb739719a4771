"""The one rule for output folders: write aside, swap into place, replace only what we wrote.

Every tool that writes a folder of results (prepare, evaluate, and any future one) goes through
`check_output_folder` before doing any work and `staged_output_folder` to write. The rule:

- a new folder is written to `.<name>.tmp-XXXX` beside the target and renamed into place only
  when complete, so a failure or Ctrl-C never leaves half of it;
- an existing folder is replaced only with `--overwrite`, and only when it is empty or holds
  nothing but what this project wrote there: the marker file (`.cephalometric-output`) written
  into every folder we publish lists its files, and any other file stops the run with one line
  naming it (older folders without that list are judged by the tool's known layout);
- never a protected path (the data root, the input file, the checkpoint's folder) or a folder
  that contains one, whatever the marker says.

`check_not_inputs` is the same rule for single output files: none may be one of the run's inputs
or a folder holding one.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from cephalometric.atomic import (
    RETIRED_TAG,
    STAGING_TAG,
    current_umask,
    remove_stale_temporaries,
    signals_deferred,
)
from cephalometric.errors import UserError

MARKER = '.cephalometric-output'
PathLike = Union[str, os.PathLike]


def nearest_existing(path: PathLike) -> str:
    """`path`, or the nearest of its parents that exists: where a new output would be created."""
    existing = os.path.abspath(os.fspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


@dataclass(frozen=True)
class LegacyLayout:
    """How a tool's folders looked before the marker listed their files: a marker file of its own
    (`marker`), entries that must be there too (`required`), and fnmatch patterns of relative
    paths it wrote (`patterns`); anything else in such a folder is someone else's."""
    marker: str
    required: tuple = ()
    patterns: tuple = ()


def _entries(folder: Path) -> list[str]:
    """Relative POSIX paths of every file, link and empty folder under `folder` (links not
    followed)."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            found.append((here / name).relative_to(folder).as_posix())
        if not dirs and not files and here != folder:
            found.append(here.relative_to(folder).as_posix() + '/')
    return sorted(found)


def _listed_files(folder: Path) -> Optional[set]:
    """The files our marker in `folder` lists, or None when it holds no list (or no marker)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding='utf-8')[:1 << 24])
    except (OSError, ValueError, RecursionError):
        return None
    files = data.get('files') if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def foreign_entries(folder: PathLike, legacy: Iterable = ()) -> Optional[list[str]]:
    """What in `folder` this project did not write: [] when everything is ours (or it is empty),
    the foreign relative paths otherwise, None when nothing marks the folder as ours at all."""
    folder = Path(folder)
    entries = _entries(folder)
    if not entries:
        return []
    listed = _listed_files(folder)
    if listed is not None:
        return [e for e in entries if e != MARKER and e not in listed]
    for layout in legacy:
        if isinstance(layout, str):     # a bare legacy marker name: the layout of that marker
            layout = LegacyLayout(layout)
        if (folder / layout.marker).is_file() and all(
                os.path.lexists(folder / name) for name in layout.required):
            known = (layout.marker, MARKER) + tuple(layout.patterns)
            return [e for e in entries if not any(fnmatch.fnmatchcase(e, p) for p in known)]
    return None     # not ours, or ours from before the marker listed files: nothing to tell
                    # ours from yours, so nothing is replaced


def check_replaceable(folder: PathLike, option: str, legacy: Iterable = ()) -> None:
    """Refuse to replace `folder` unless everything in it is this project's."""
    foreign = foreign_entries(folder, legacy)
    if foreign is None:
        raise UserError(f'{os.fspath(folder)!r} exists and was not written by this project, so '
                        f'--overwrite will not delete it; choose another {option}')
    if foreign:
        more = f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''
        raise UserError(f'{os.fspath(folder)!r} holds {foreign[0]!r}{more}, which this project '
                        f'did not write, so --overwrite will not delete the folder; move it out '
                        f'or choose another {option}')


def check_not_inputs(outputs: Iterable[tuple], inputs: Iterable[tuple]) -> None:
    """Refuse, before any work, an output that is one of the run's inputs or a folder holding one,
    or one file named by two outputs.

    outputs: (path, option) pairs; inputs: (path, what it is) pairs, e.g. (checkpoint,
    'the checkpoint'), for every file and folder the run reads (None paths are skipped).
    """
    kept = [(os.fspath(p), what, _resolved(p)) for p, what in inputs
            if p is not None and os.fspath(p)]
    seen = {}
    for path, option in outputs:
        if path is None:
            continue
        target = _resolved(path)
        for name, what, real in kept:
            if real == target:
                raise UserError(f'{option} {os.fspath(path)} is {what} ({name}), which this run '
                                f'reads; choose another {option}')
            if target in real.parents:
                raise UserError(f'{option} {os.fspath(path)} holds {what} ({name}), which this run '
                                f'reads; choose another {option}')
        if target in seen:
            raise UserError(f'{option} and {seen[target]} both write {os.fspath(path)}; give them '
                            'different names')
        seen[target] = option


def check_output_folder(out_dir: PathLike, *, overwrite: bool, option: str = '--out-dir',
                        protected: Iterable[Optional[PathLike]] = (),
                        legacy_markers: Iterable[str] = ()) -> None:
    """Refuse, before any work is done, an output folder that cannot be (re)placed safely.

    `protected` lists paths that must survive: the output may be neither one of them nor a folder
    that contains one. `legacy_markers`: the `LegacyLayout`s (or bare marker file names) of a
    tool's folders from before the marker listed its files (prepare's summary.json).
    """
    target = _resolved(out_dir)
    for path in protected:
        if path is None:
            continue
        kept = _resolved(path)
        if kept == target or target in kept.parents:
            raise UserError(f'{option} {os.fspath(out_dir)!r} would replace {os.fspath(path)!r}, '
                            f'which this run reads; choose another {option}')
    if not os.path.lexists(out_dir):
        return
    if os.path.islink(out_dir) or not os.path.isdir(out_dir):
        raise UserError(f'{option} {os.fspath(out_dir)!r} exists and is not a folder; choose '
                        f'another {option}')
    if not overwrite:
        raise UserError(f'{os.fspath(out_dir)!r} already exists; pass --overwrite to replace it, '
                        f'or choose another {option}')
    check_replaceable(out_dir, option, legacy_markers)
    _CHECKED[_resolved(out_dir)] = set(_entries(Path(out_dir)))


# What each folder checked for replacement held then (resolved path -> entries).
_CHECKED: dict = {}


def _check_unchanged(out_dir: PathLike, option: str) -> None:
    """Refuse to replace `out_dir` if something was put there since it was checked."""
    before = _CHECKED.get(_resolved(out_dir))
    if before is None:
        check_replaceable(out_dir, option)
        return
    added = [e for e in _entries(Path(out_dir)) if e not in before]
    if added:
        raise UserError(f'{os.fspath(out_dir)!r} gained {added[0]!r} while this run worked, so it '
                        f'is not replaced; move that out and run again, or choose another '
                        f'{option}')


@contextlib.contextmanager
def staged_output_folder(out_dir: PathLike, tool: str, option: str = '--out-dir') \
        -> Iterator[Path]:
    """Yield an empty staging folder; on success mark it and swap it onto `out_dir`.

    The caller has run `check_output_folder`; a folder already at `out_dir` is checked again
    just before it is replaced (a file put there meanwhile stops the swap), moved aside, and
    deleted only once the new one is in place (it is put back if the rename fails). Any OSError
    becomes one UserError line; the staging folder is always removed on failure, and stale
    staging folders of runs that were killed are removed first.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent if str(out_dir.parent) else Path('.')
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(str(parent))
        staging = parent / f'.{out_dir.name}{STAGING_TAG}{os.getpid()}-{uuid.uuid4().hex[:12]}'
        # Not tempfile.mkdtemp: its folder is private (0700) and would stay so once renamed.
        staging.mkdir(mode=0o777 & ~current_umask())
    except OSError as error:
        raise UserError(f'cannot write to {str(parent)!r}: {error.strerror or error}; choose '
                        'another output folder or check its permissions') from None
    try:
        yield staging
        manifest = {'written_by': tool, 'files': _entries(staging)}
        (staging / MARKER).write_text(json.dumps(manifest, indent=1) + '\n', encoding='utf-8')
        with signals_deferred():
            if os.path.lexists(out_dir):
                _check_unchanged(out_dir, option)
            _swap_into_place(staging, out_dir)
    except OSError as error:
        raise UserError(f'could not write {str(out_dir)!r} ({error.strerror or error}); check '
                        'free disk space and permissions') from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # a no-op once it has been moved into place


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    retired = None
    if os.path.lexists(out_dir):
        retired = out_dir.parent / f'.{out_dir.name}{RETIRED_TAG}{os.getpid()}-' \
                                   f'{uuid.uuid4().hex[:8]}'
        os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except OSError:
        if retired is not None:
            os.replace(retired, out_dir)   # put the previous folder back
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
