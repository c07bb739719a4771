"""Write a file so that readers see the old version or the complete new one, never half of it."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to `path`; move it over `path` only if the block succeeds.

    The temporary name keeps the extension (savefig, imwrite and friends choose the format by it)
    and lives in the same folder, so the final os.replace is an atomic rename.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix='.tmp-',
                                         suffix=os.path.basename(path))
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
