"""The one rule for output folders: write aside, swap into place, replace only what we wrote.

Every tool that writes a folder of results (prepare, evaluate, and any future one) goes through
`check_output_folder` before doing any work and `staged_output_folder` to write. The rule:

- a new folder is written to `.<name>.tmp-XXXX` beside the target and renamed into place only
  when complete, so a failure or Ctrl-C never leaves half of it;
- an existing folder is replaced only with `--overwrite`, and only when it is empty or carries
  this project's marker file (`.cephalometric-output`, written into every folder we publish);
- never a protected path (the data root, the input file, the checkpoint's folder) or a folder
  that contains one, whatever the marker says.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from cephalometric.atomic import current_umask
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


def written_by_us(folder: PathLike, legacy_markers: Iterable[str] = ()) -> bool:
    """True for an empty folder or one that holds our marker (or a tool's legacy marker file)."""
    folder = Path(folder)
    names = {entry.name for entry in folder.iterdir()}
    return not names or MARKER in names or any(
        (folder / name).is_file() for name in legacy_markers)


def check_output_folder(out_dir: PathLike, *, overwrite: bool, option: str = '--out-dir',
                        protected: Iterable[Optional[PathLike]] = (),
                        legacy_markers: Iterable[str] = ()) -> None:
    """Refuse, before any work is done, an output folder that cannot be (re)placed safely.

    `protected` lists paths that must survive: the output may be neither one of them nor a folder
    that contains one. `legacy_markers` are file names that marked a tool's folders before the
    common marker existed (prepare's summary.json).
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
    if not written_by_us(out_dir, legacy_markers):
        raise UserError(f'{os.fspath(out_dir)!r} exists and was not written by this project, so '
                        f'--overwrite will not delete it; choose another {option}')


@contextlib.contextmanager
def staged_output_folder(out_dir: PathLike, tool: str) -> Iterator[Path]:
    """Yield an empty staging folder; on success mark it and swap it onto `out_dir`.

    The caller has run `check_output_folder`. A folder already at `out_dir` is moved aside first
    and deleted only once the new one is in place (it is put back if the rename fails). Any
    OSError becomes one UserError line; the staging folder is always removed on failure.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent if str(out_dir.parent) else Path('.')
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f'.{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}'
        # Not tempfile.mkdtemp: its folder is private (0700) and would stay so once renamed.
        staging.mkdir(mode=0o777 & ~current_umask())
    except OSError as error:
        raise UserError(f'cannot write to {str(parent)!r}: {error.strerror or error}; choose '
                        'another output folder or check its permissions') from None
    try:
        yield staging
        (staging / MARKER).write_text(json.dumps({'written_by': tool}) + '\n', encoding='utf-8')
        _swap_into_place(staging, out_dir)
    except OSError as error:
        raise UserError(f'could not write {str(out_dir)!r} ({error.strerror or error}); check '
                        'free disk space and permissions') from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # a no-op once it has been moved into place


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    retired = None
    if os.path.lexists(out_dir):
        retired = out_dir.parent / f'.{out_dir.name}.old-{uuid.uuid4().hex[:8]}'
        os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except OSError:
        if retired is not None:
            os.replace(retired, out_dir)   # put the previous folder back
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
