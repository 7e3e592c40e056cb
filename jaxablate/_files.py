"""Files written so that a crash leaves the old file or the new one, never half of one; and the
progress bar long work shows. Ground floor: imports nothing from the package."""

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, exclusive: bool = False
) -> bool:
    """Write ``path`` through a temporary file in the same directory and an atomic rename.

    The file is flushed and fsynced before the rename, and gets the permissions of a normally
    created file (``0666`` less the umask), so other users may share a results directory.

    Args:
        path: The file to write.
        write: Called with the open binary temporary file.
        exclusive: Leave an existing ``path`` alone (atomic create-if-absent) and return
            ``False``.

    Returns:
        Whether ``path`` now holds what ``write`` wrote.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # atomic create-if-absent
                return True
            except FileExistsError:
                return False
            except OSError:  # filesystems without hard links
                if path.exists():
                    return False
        os.replace(tmp, path)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> bool:
    """:func:`atomic_write` of UTF-8 ``text``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), exclusive=exclusive)


def progress_bar(*, total: int, initial: int = 0, desc: str, unit: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (``enabled`` and stderr a terminal), else a disabled one.

    Always returns a usable bar (``update``, ``close``, context manager), so callers need no
    ``None`` checks.
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=total >= 10**5,
        dynamic_ncols=True,
        disable=not enabled or not sys.stderr.isatty(),
    )
