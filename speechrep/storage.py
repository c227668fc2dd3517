"""Safe writes to output folders: atomic files, one run per folder, settings that cannot silently change.

    with OutputFolder(out_dir, "extract", settings={"upstream": ..., "weights": ...}, overwrite=False):
        atomic_write_text(out_dir / "results.json", text)

- `atomic_write(path, write)` writes through a temporary file in the same folder and renames it over the
  target: a reader (or a killed writer) never sees half a file. Every writer in speechrep uses it.
- `OutputLock` holds an exclusive `flock` on `OUT/.speechrep.lock` for the life of a run and records the
  holder (PID, host, command) in it; a second run on the same folder fails at once with a one-line error
  naming the holder. The kernel drops the lock when its process dies, so kill -9 never leaves a stale lock.
- `check_settings` records the settings that produced a resumable output (`OUT/.speechrep.settings.json`);
  a later run with different settings stops with the keys that changed, unless it asked to start over.
- `disk_errors` turns a full disk or an unwritable folder into one-line `OutputError`s.
Under torchrun only rank 0 locks and records; the other ranks share its folder. `every_rank=True` makes every
rank lock and record, for runs whose ranks each write a folder of their own (distributed extraction's parts).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from speechrep.errors import SpeechrepError

LOCK_NAME = ".speechrep.lock"
SETTINGS_NAME = ".speechrep.settings.json"
SETTINGS_LOCK_NAME = ".speechrep.settings.lock"
log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"  # temporaries keep the target's name as their end, so format-by-suffix writers work


class OutputError(SpeechrepError):
    """An output folder that cannot be used: in use by another run, unwritable, full, or made differently."""


# ------------------------------------------------------------------------------------------------ atomic files

def atomic_write(path: Path, write: Callable[[Path], None], mode: int = 0o644) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=f"-{path.name}")
    os.close(fd)
    try:
        os.chmod(tmp, mode)  # mkstemp creates 0600; outputs are meant to be shared
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, indented and with sorted keys."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def remove_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed writer left in `folder` (not recursive); returns how many."""
    removed = 0
    for tmp in Path(folder).glob(f"{TEMP_PREFIX}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


# ------------------------------------------------------------------------------------------------ disk errors

@contextlib.contextmanager
def disk_errors(where: Path | str) -> Iterator[None]:
    """Re-raise a full disk, a read-only or unwritable location as a one-line OutputError about `where`."""
    try:
        yield
    except OSError as e:
        if isinstance(e, OutputError) or e.errno not in _DISK_ERRNOS:
            raise
        raise OutputError(f"{where}: {_DISK_ERRNOS[e.errno]} ({e.strerror}); nothing was marked done, "
                          "free space or fix permissions and run the same command again to resume") from e


_DISK_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only",
                errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.ENOTDIR: "not a folder",
                errno.EEXIST: "exists and is not a folder"}


def ensure_output_dir(path: Path, flag: str = "--out") -> Path:
    """Create `path` (and parents) as a writable folder, or raise one OutputError line saying why not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot create the folder ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: the folder is not writable")
    return path


# ------------------------------------------------------------------------------------------------ one run

def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class OutputLock:
    """A lock on an output folder for one run (see the module docstring).

    Exclusive by default. `shared=True` lets several runs hold the folder at once (runs that each lock the
    sub-folders they write, like benchmark runs of different upstreams into one --out) while still keeping
    out an exclusive holder (a run that starts the folder over)."""

    def __init__(self, folder: Path, what: str, shared: bool = False, every_rank: bool = False):
        self.folder = Path(folder)
        self.what = what  # e.g. "speechrep extract"
        self.shared, self.every_rank = shared, every_rank
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise OutputError naming the run that holds it."""
        import fcntl

        if not (self.every_rank or _is_rank_zero()) or self._fd is not None:
            return
        ensure_output_dir(self.folder)
        path = self.folder / LOCK_NAME
        with disk_errors(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                raise OutputError(f"{self.folder}: in use by {holder}; wait for it to finish or choose another "
                                  "output folder") from None
            info = (f"{self.what} (pid {os.getpid()} on {socket.gethostname()}, "
                    f"started {time.strftime('%Y-%m-%d %H:%M:%S')})")
            with disk_errors(path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, info.encode(), 0)
        except BaseException:
            os.close(fd)  # never leave the folder locked by a descriptor nobody holds
            raise
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (ranks other than 0 under torchrun never do)."""
        return self._fd is not None

    def share(self) -> None:
        """Turn a held exclusive lock into a shared one (after the work that needed the folder alone)."""
        import fcntl

        if self._fd is not None and not self.shared:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self.shared = True

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file means nobody holds the folder)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def check_settings(folder: Path, settings: dict[str, Any], overwrite: bool = False,
                   hint: str = "--overwrite", every_rank: bool = False) -> None:
    """Record `settings` for `folder`, or raise OutputError if the folder was made with different ones.

    Values must be JSON-serialisable. With `overwrite=True` the folder's previous contents are removed first
    (the caller holds its lock), so nothing of the old run can mix with the new one.
    """
    if not (every_rank or _is_rank_zero()):
        return
    folder = ensure_output_dir(Path(folder))
    path = folder / SETTINGS_NAME
    current = json.loads(json.dumps(settings))  # the JSON view: tuples become lists, as when read back
    if overwrite:
        clear_folder(folder)
    elif path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OutputError(f"{path}: unreadable settings record; use {hint} to start over") from None
        # A key the record lacks was added to speechrep after the folder was made: its default is accepted,
        # so a newer version resumes an older run; every recorded key must still match.
        changed = [key for key in sorted(recorded) if recorded.get(key) != current.get(key)]
        if changed:
            details = "; ".join(f"{key}: {_describe(recorded.get(key))} -> {_describe(current.get(key))}"
                                for key in changed)
            raise OutputError(f"{folder}: made with other settings ({details}); use {hint} to start over "
                              "or choose another output folder")
        return
    elif any(p.name not in (LOCK_NAME, SETTINGS_LOCK_NAME) for p in folder.iterdir()):
        # Output of an older speechrep without a record, or a folder that is not ours: keep it as it is.
        log.warning("%s has files but no settings record; recording the current settings", folder)
    with disk_errors(path):
        atomic_write_json(path, current)


def clear_folder(folder: Path) -> None:
    """Remove everything in `folder` except its lock file."""
    for child in Path(folder).iterdir():
        if child.name in (LOCK_NAME, SETTINGS_LOCK_NAME):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextlib.contextmanager
def _settings_lock(folder: Path, every_rank: bool = False) -> Iterator[None]:
    """A short blocking exclusive lock around reading and recording a folder's settings (rank 0 only)."""
    import fcntl

    if not (every_rank or _is_rank_zero()):
        yield
        return
    ensure_output_dir(folder)
    fd = os.open(Path(folder) / SETTINGS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class OutputFolder:
    """Lock `folder` for one run and check (or record) its settings: the entry of every resumable command.

    `shared=True`: other runs with the same settings may hold the folder too (each must lock what it writes
    inside); starting over (`overwrite`) still takes the folder alone for the clearing, then shares it."""

    def __init__(self, folder: Path, what: str, settings: dict[str, Any] | None = None,
                 overwrite: bool = False, shared: bool = False, every_rank: bool = False):
        self.lock = OutputLock(folder, what, shared=shared and not overwrite, every_rank=every_rank)
        self.folder, self.settings, self.overwrite, self.shared = Path(folder), settings, overwrite, shared
        self.every_rank = every_rank

    def __enter__(self) -> Path:
        self.lock.acquire()
        try:
            if self.settings is not None:
                with _settings_lock(self.folder, self.every_rank):  # shared holders must not both record
                    check_settings(self.folder, self.settings, self.overwrite, every_rank=self.every_rank)
            if self.lock.held and not self.lock.shared:  # nobody else can be writing a temporary now
                remove_temporaries(self.folder)
            if self.shared:
                self.lock.share()
        except BaseException:
            self.lock.release()
            raise
        return self.folder

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def release_inherited_locks() -> None:
    """In a forked child: close the output-folder lock descriptors inherited from the parent.

    A forked worker shares its parent's `flock`; if it outlived a killed parent it would keep the folder
    locked. Closing the child's copies leaves the parent's lock as it is. Linux only (/proc); else a no-op."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for fd in fds:
        try:
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == LOCK_NAME:
                os.close(int(fd))
        except (OSError, ValueError):
            continue


def forked_children_release_locks() -> None:
    """Make every process forked from this one run `release_inherited_locks` (registered once per process)."""
    if not getattr(forked_children_release_locks, "registered", False):
        os.register_at_fork(after_in_child=release_inherited_locks)
        forked_children_release_locks.registered = True  # type: ignore[attr-defined]
