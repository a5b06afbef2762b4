"""Atomic file operations: write to a temporary name in the same folder, fsync, rename. A reader sees
the old file or the new one, never half of one; an interruption leaves the original untouched."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``path`` (a file maps to itself)."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256(path)}
    return {str(p.relative_to(path)): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _synced_temp(dst: Path, write):
    """A temporary file next to ``dst`` holding what ``write(fh)`` wrote, flushed and fsynced; yielded for the
    caller to move into place, removed whatever happens."""
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def copy_file_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically; refuses to overwrite an existing ``dst``."""
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; triage never overwrites")
    with open(src, "rb") as fi, _synced_temp(dst, lambda fo: shutil.copyfileobj(fi, fo, 1 << 20)) as tmp:
        os.link(tmp, dst)  # fails if dst appeared meanwhile: never overwrite
        _fsync_dir(dst.parent)


def replace_file(path: Path, data: bytes) -> None:
    """Overwrite ``path`` with ``data`` atomically (the caller keeps the backup): temporary file, fsync,
    rename, fsync of the folder. An interruption leaves the old content."""
    path = Path(path)
    with _synced_temp(path, lambda fh: fh.write(data)) as tmp:
        os.replace(tmp, path)
        _fsync_dir(path.parent)


def replace_in(dir_fd: int, name: str, data: bytes) -> None:
    """``replace_file`` relative to an open folder: the temporary file is created there (exclusive, no link
    followed), fsynced, renamed over ``name`` and the folder fsynced, so a path swapped after the caller
    checked the folder cannot redirect the write."""
    tmp = f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def install_dir_atomic(staging: Path, dst: Path) -> None:
    """Move a fully written staging folder to ``dst`` with one rename; refuses an existing ``dst``."""
    if Path(dst).exists():
        raise FileExistsError(f"{dst} exists; triage never overwrites")
    for p in Path(staging).rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    os.rename(staging, dst)
    _fsync_dir(Path(dst).parent)


def restore_backup(dir_fd: int, path: Path, backup: Path, before_sha256: str | None) -> None:
    """Put the backup triage made back over ``path`` (both named relative to the folder ``dir_fd``, already
    checked by the caller), once its digest shows it is that backup; then remove the backup."""
    bfd = os.open(backup.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(bfd, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != before_sha256:
        raise RuntimeError(f"{backup} is not the backup triage made (its digest differs); refusing")
    replace_in(dir_fd, path.name, data)
    os.unlink(backup.name, dir_fd=dir_fd)


def replace_with_backup(path: Path, expected: str, text: str) -> Path:
    """Replace the text of ``path`` by ``text`` atomically, beside a byte-exact backup (returned); refuses
    when the file no longer holds ``expected`` (what the proposal was made from)."""
    if path.read_text() != expected:
        raise RuntimeError(f"{path} changed since the proposal was made; propose again")
    backup = path.with_name(f"{path.name}.triage-backup-{uuid.uuid4().hex[:8]}")
    copy_file_atomic(path, backup)
    replace_file(path, text.encode())
    return backup
