"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one."""
import contextlib
import io
import os
import tempfile
from typing import IO, Iterator


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """``with atomic_open(path, "w") as f: ...`` writes a temporary file in ``path``'s folder,
    flushes and fsyncs it, then renames it over ``path`` (and fsyncs the folder). On an exception
    the temporary file is removed and ``path`` is left as it was. ``mode`` is "w" or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with io.open(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)


class AtomicPathManager:
    """An iopath ``PathManager`` whose ``open(path, "w"/"wb")`` on local files is :func:`atomic_open`;
    everything else is delegated (fvcore's ``Checkpointer`` writes through ``self.path_manager``)."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path: str, mode: str = "r", **kwargs):
        if mode in ("w", "wb") and "://" not in str(path):
            return atomic_open(path, mode)
        return self._path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)
