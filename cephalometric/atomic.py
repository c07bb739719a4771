"""Write a file so that readers see the old version or the complete new one, never half of it.

`atomic_path` for one file; `temporary_beside` + `publish` are its two halves, for callers that
move several files into place together (`results.StagedFiles`).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from typing import Iterator

# Every temporary this project makes is named `.tmp-<pid>-...` (files) or `.<name>.tmp-<pid>-...`
# (staging folders; `.<name>.old-<pid>-...` for a folder's previous version during the swap): a run
# that was killed (kill -9) leaves one behind, and the next run in that folder removes it (or puts
# a previous version back) once no process of that number is running.
STAGING_TAG = '.tmp-'
RETIRED_TAG = '.old-'     # a folder's previous version, while its new one is put in place
_STALE = re.compile(r'^\.(?:.+)?\.?(?:tmp|old)-(\d+)-')


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_beside(path: str) -> str:
    """An empty temporary file in `path`'s folder whose name keeps `path`'s extension.

    Same folder: the final os.replace is an atomic rename. Same extension: savefig, imwrite and
    friends choose the format by it.
    """
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                         prefix=f'{STAGING_TAG}{os.getpid()}-',
                                         suffix=os.path.basename(path))
    os.close(handle)
    return temporary


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True     # someone else's process, or not a pid: leave it
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove temporaries of killed runs of this project from `folder`; returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _STALE.match(name)
        if not match or int(match.group(1)) == os.getpid() or _running(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            retired = re.match(r'^\.(.+)\.old-\d+-', name)
            if retired and not os.path.lexists(os.path.join(folder, retired.group(1))):
                # killed between moving the previous results aside and putting the new ones in
                # place: the previous results go back
                os.replace(path, os.path.join(folder, retired.group(1)))
            elif os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
    return removed


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done: the renames that publish several files
    happen all together or not at all (the signal then arrives, after them).

    Python-level: the handlers record the signal and the block's end passes it on. (Blocking it
    with pthread_sigmask would not do: the kernel hands a process signal to any thread that does
    not block it, e.g. one of torch's, and Python then runs the handler in the main thread.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(received):     # each once, in the order they came
            handler = previous[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)


def publish(temporary: str, path: str) -> None:
    """Give `temporary` the permissions a plain open() would have (mkstemp makes it 0600, the
    umask is respected) and rename it onto `path`."""
    os.chmod(temporary, 0o666 & ~current_umask())
    os.replace(temporary, path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to `path`; move it over `path` only if the block succeeds."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))
    temporary = temporary_beside(path)
    try:
        yield temporary
        publish(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomically(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, 'w', encoding='utf-8', newline='') as stream:
            stream.write(text)
