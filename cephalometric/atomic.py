"""Write a file so that readers see the old version or the complete new one, never half of it.

Imports only the standard library.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


def _default_mode() -> int:
    """0666 less the umask: what open() would have given the file (mkstemp makes it 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to `path`; move it over `path` only if the block succeeds.

    The temporary name keeps the extension (savefig, imwrite and friends choose the format by it)
    and lives in the same folder, so the final os.replace is an atomic rename. The file gets the
    permissions a plain open() would give it (the umask is respected), not mkstemp's 0600.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix='.tmp-',
                                         suffix=os.path.basename(path))
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, _default_mode())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomically(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, 'w', encoding='utf-8', newline='') as stream:
            stream.write(text)
