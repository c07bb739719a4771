"""Write a file so that readers see the old version or the complete new one, never half of it.

`atomic_path` for one file; `temporary_beside` + `publish` are its two halves, for callers that
move several files into place together (`results.StagedFiles`).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


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
                                         prefix='.tmp-', suffix=os.path.basename(path))
    os.close(handle)
    return temporary


def publish(temporary: str, path: str) -> None:
    """Give `temporary` the permissions a plain open() would have (mkstemp makes it 0600, the
    umask is respected) and rename it onto `path`."""
    os.chmod(temporary, 0o666 & ~current_umask())
    os.replace(temporary, path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to `path`; move it over `path` only if the block succeeds."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
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
