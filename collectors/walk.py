"""Walking capture paths safely: one bad entry costs only that entry.

Every entry is looked at once with ``os.scandir``/``os.stat``; what cannot be read is listed as skipped with
the reason (permission, symlink loop, not a regular file), never raised. Symlinks are followed (a capture
may link its files from elsewhere), but a directory already walked (same device and inode: a symlink cycle,
``/proc/1/cwd``) is not walked again, pseudo file systems (proc, sysfs, devtmpfs, ...) are not entered at
all, and the walk stops at MAX_FILES files or MAX_DEPTH levels (listed as skipped). Only regular files are
returned: a FIFO, socket or device is never opened (opening a FIFO blocks).

File names are bytes on POSIX; one that is not UTF-8 (``caf\\xe9.pb``) is shown with its odd bytes
escaped (``display``), so it can be stored, reported and printed.
"""
from __future__ import annotations

import errno
import os
import stat
from functools import lru_cache
from pathlib import Path

MAX_FILES = 250_000
MAX_DEPTH = 64
PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs",
             "pstore", "bpf", "mqueue", "configfs", "fusectl", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs",
             "rpc_pipefs", "nsfs", "selinuxfs"}


def display(path) -> str:
    """The path as valid text: bytes that are not UTF-8 appear as ``\\xe9`` escapes (distinct names stay
    distinct)."""
    s = os.fspath(path)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@lru_cache(maxsize=1)
def _pseudo_devices() -> frozenset[int]:
    """st_dev of every mounted pseudo file system (Linux /proc/mounts; empty elsewhere)."""
    devs = set()
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return frozenset()
    for parts in mounts:
        if len(parts) >= 3 and parts[2] in PSEUDO_FS:
            try:
                devs.add(os.stat(parts[1].encode().decode("unicode_escape")).st_dev)
            except (OSError, UnicodeDecodeError):
                pass
    return frozenset(devs)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "dangling symlink or vanished entry"
    return f"unreadable: {exc.strerror or exc}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def walk(paths: list[str | Path], max_files: int | None = None) -> tuple[list[Path], dict[Path, int], list[dict]]:
    """(regular files under ``paths``, sorted per directory; their sizes; skipped entries with reasons)."""
    limit = MAX_FILES if max_files is None else max_files
    files: list[Path] = []
    sizes: dict[Path, int] = {}
    skipped: list[dict] = []
    seen_dirs: set[tuple[int, int]] = set()
    pseudo = _pseudo_devices()

    def skip(p, reason):
        skipped.append({"path": display(p), "reason": reason})

    def visit(p: Path, st: os.stat_result, depth: int, top: bool) -> bool:
        """Add a file or walk a directory; False once the file limit is reached."""
        if stat.S_ISREG(st.st_mode):
            if len(files) >= limit:
                skip(p, f"walk stopped at {limit} files (collectors.walk.MAX_FILES)")
                return False
            files.append(p)
            sizes[p] = st.st_size
            return True
        if not stat.S_ISDIR(st.st_mode):
            skip(p, _kind(st.st_mode))
            return True
        if st.st_dev in pseudo:
            skip(p, "a pseudo file system (proc, sys, dev): not walked")
            return True
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            if top:
                return True
            skip(p, "directory already walked (a symlink cycle or a second link)")
            return True
        seen_dirs.add(key)
        if depth >= MAX_DEPTH:
            skip(p, f"deeper than {MAX_DEPTH} levels: not walked")
            return True
        try:
            with os.scandir(p) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skip(p, _reason(exc))
            return True
        for e in entries:
            if e.name.startswith("."):
                continue
            child = Path(e.path)
            try:
                cst = os.stat(e.path) if e.is_symlink() else e.stat(follow_symlinks=False)
            except OSError as exc:
                skip(child, _reason(exc))
                continue
            if not visit(child, cst, depth + 1, False):
                return False
        return True

    for p in paths:
        p = Path(p)
        try:
            st = os.stat(p)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not os.path.lexists(p):
                skip(p, "no such file or directory")
            else:
                skip(p, _reason(exc))
            continue
        if not visit(p, st, 0, True):
            break
    return files, sizes, skipped
