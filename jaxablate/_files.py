"""Files that several processes share safely, and the progress bar long work shows.

- :func:`atomic_write`: a crash (kill, Ctrl-C, full disk) leaves the old file or the new one,
  never half of one. Its temporary file is named after the writer (host and process id), so
  :func:`remove_stale_temps` deletes only temporary files whose writer is gone.
- :func:`claim`: an atomically created claim file, so that concurrent processes split work
  instead of repeating it. A held claim is touched every :data:`HEARTBEAT_SECONDS`; one whose
  process is gone (same host) or that was not touched for :data:`STALE_SECONDS` (any host, so
  hosts' clocks must agree to well within that) is stale and may be taken over.

Ground floor: imports nothing from the package.
"""

import functools
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

#: Seconds between touches of a held claim.
HEARTBEAT_SECONDS = 5.0
#: A claim or temporary file not touched for this long belongs to no live process.
STALE_SECONDS = 300.0
#: Separates the parts of a temporary file's name (no host name or file name holds it).
_SEP = "~"


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@functools.cache
def host() -> str:
    """This machine's name, as claims and temporary files record it."""
    return socket.gethostname().replace(_SEP, "-") or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a killed, unreaped zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): trust the signal
        return True


def _with_path(err: OSError, path: Path) -> OSError:
    """``err`` (same class and errno) naming ``path``, for errors like a full disk."""
    if err.filename is not None:
        return err
    try:
        return type(err)(err.errno, err.strerror or str(err), str(path))
    except TypeError:
        return err


def _write_once(path: Path, write: Callable[[IO[bytes]], Any], exclusive: bool) -> bool:
    prefix = f".{path.name}{_SEP}{host()}{_SEP}{os.getpid()}{_SEP}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
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
            except FileNotFoundError:
                raise
            except OSError:  # filesystems without hard links
                if path.exists():
                    return False
        os.replace(tmp, path)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, exclusive: bool = False
) -> bool:
    """Write ``path`` through a temporary file in the same directory and an atomic rename.

    The file is flushed and fsynced before the rename, and gets the permissions of a normally
    created file (``0666`` less the umask), so other users may share a results directory. A
    failure (a full disk, Ctrl-C) removes the temporary file and leaves ``path`` as it was.

    Args:
        path: The file to write.
        write: Called with the open binary temporary file.
        exclusive: Leave an existing ``path`` alone (atomic create-if-absent) and return
            ``False``.

    Returns:
        Whether ``path`` now holds what ``write`` wrote.

    Raises:
        OSError: the write failed (its ``filename`` names ``path`` when the system gave none).
    """
    path = Path(path)
    try:
        try:
            return _write_once(path, write, exclusive)
        except FileNotFoundError:
            if not path.parent.is_dir():
                raise
            # our temporary file vanished (removed by an older, careless cleanup): once more
            return _write_once(path, write, exclusive)
    except OSError as err:
        raise _with_path(err, path) from err


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> bool:
    """:func:`atomic_write` of UTF-8 ``text``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), exclusive=exclusive)


def is_temp(name: str) -> bool:
    """Whether ``name`` is one of :func:`atomic_write`'s temporary files."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete the temporary files in ``directory`` whose writer is gone.

    A temporary file of this host is stale when its process has exited; one of another host
    (or of an older version, which did not name the writer) when it is older than
    :data:`STALE_SECONDS`. A live writer's file is never touched.

    Returns:
        How many files were deleted.
    """
    directory = Path(directory)
    removed = 0
    for name in os.listdir(directory):
        if not is_temp(name):
            continue
        parts = name.split(_SEP)
        path = directory / name
        if len(parts) == 4 and parts[1] == host() and parts[2].isdigit():
            stale = not pid_alive(int(parts[2]))
        else:
            try:
                stale = time.time() - path.stat().st_mtime > STALE_SECONDS
            except FileNotFoundError:
                continue
        if stale:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# ------------------------------------------------------------------------------ claims


@dataclass(frozen=True)
class Owner:
    """Who holds a claim, and whether it still runs.

    Attributes:
        host: The claiming process's host (``"?"`` when the file could not be read).
        pid: Its process id (0 when unknown).
        token: Unique to one claim.
        state: ``"live"`` (running, or recently touched) or ``"stale"`` (gone).
        age: Seconds since the claim was last touched.
    """

    host: str
    pid: int
    token: str
    state: Literal["live", "stale"]
    age: float

    def describe(self) -> str:
        """``host:pid (running)`` or ``host:pid (gone)``, for messages."""
        what = "running" if self.state == "live" else f"gone, last seen {self.age:.0f} s ago"
        return f"{self.host}:{self.pid} ({what})"


def owner(path: str | os.PathLike) -> Owner | None:
    """The owner of the claim file ``path``, or ``None`` when there is none."""
    path = Path(path)
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        who = (str(record["host"]), int(record["pid"]), str(record["token"]))
    except (ValueError, KeyError, TypeError):  # not written by claim(): judged by its age
        who = ("?", 0, "")
    stale = age > STALE_SECONDS or (who[0] == host() and not pid_alive(who[1]))
    return Owner(*who, state="stale" if stale else "live", age=age)


class Claim:
    """A held claim file: touched in the background until :meth:`release` (or ``with`` exit)."""

    def __init__(self, path: Path, token: str):
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._touch, name=f"claim {path.name}", daemon=True)
        self._beat.start()

    def _touch(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Stop touching the claim and delete it (unless another process took it over)."""
        self._stop.set()
        found = owner(self.path)
        if found is not None and found.token == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _break(path: Path, seen: Owner) -> None:
    """Remove the stale claim ``seen`` at ``path``, unless another process replaced it."""
    grave = path.with_name(f".{path.name}{_SEP}{host()}{_SEP}{os.getpid()}{_SEP}stale.tmp")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return  # someone else broke it
    found = owner(grave)
    if found is not None and found.token != seen.token:  # a fresh claim: put it back
        try:
            os.link(grave, path)
        except OSError:
            pass
    grave.unlink(missing_ok=True)


def claim(path: str | os.PathLike) -> Claim | None:
    """Claim ``path`` (atomic create), taking over a stale claim; ``None`` if a live claim
    holds it."""
    path = Path(path)
    token = uuid.uuid4().hex
    record = json.dumps({"host": host(), "pid": os.getpid(), "token": token, "time": time.time()})
    for _ in range(2):
        if atomic_write_text(path, record, exclusive=True):
            return Claim(path, token)
        found = owner(path)
        if found is not None and found.state == "live":
            return None
        if found is not None:
            _break(path, found)
    return None


def remove_stale_claims(directory: str | os.PathLike, suffix: str = ".claim") -> int:
    """Delete the claim files (``*suffix``) in ``directory`` whose process is gone.

    Returns:
        How many were deleted.
    """
    removed = 0
    for path in Path(directory).glob(f"*{suffix}"):
        found = owner(path)
        if found is not None and found.state == "stale":
            _break(path, found)
            removed += 1
    return removed


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
