"""Write a file a user keeps so that it is the old file or the new one, never a torn one.

Every writer goes through ``atomic_path``: the content goes to a hidden temporary file in
the destination's folder (same file system, so the rename is atomic), is flushed to disk,
then replaces the destination with ``os.replace``. An exception or Ctrl-C before that
removes the temporary file and leaves the destination as it was; a kill -9 can at worst
leave a ``.NAME.*.tmp`` beside it, never a truncated NAME.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path | str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """A temporary path to write ``dest``'s new content to; it becomes ``dest`` only when
    the block finishes without an exception (``dest`` keeps its old content otherwise)."""
    dest = Path(dest)
    if dest.is_symlink():  # write where the link points, as a plain open() would
        dest = dest.resolve()
    folder = dest.parent
    mode = dest.stat().st_mode & 0o7777 if dest.exists() else 0o666 & ~_umask()
    # named before it exists: a Ctrl-C landing right after its creation still finds it to remove
    tmp = folder / f".{dest.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(tmp, mode)  # the mode a plain open() would give (or the replaced file had)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
    except BaseException:  # KeyboardInterrupt too: the old file must survive a Ctrl-C
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)


@contextmanager
def atomic_open(dest: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(dest, mode)`` for writing, replaced atomically when the block ends."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole file: mode '{mode}' is not a 'w' mode")
    with atomic_path(dest) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_text_atomic(dest: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``Path(dest).write_text(text)``, atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(dest)


def write_bytes_atomic(dest: str | Path, data: bytes) -> Path:
    """``Path(dest).write_bytes(data)``, atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def savefig_atomic(fig: Any, dest: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig(dest)``, atomically; the format follows ``dest``'s suffix as savefig's would."""
    dest = Path(dest)
    kwargs.setdefault("format", dest.suffix[1:].lower() or None)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, **kwargs)
    return dest
