"""The ledger: every change triage makes, with what it measured before and after, the paths and content
hashes it created, and how to undo it. An append-only JSON-lines file beside the artifacts (in the entry's
``root``), a global copy (so ``triage rollback ID`` finds it), and a DuckDB table when a store is in use.

An entry records absolute, resolved paths: ``root`` (the one folder the change was made in, with its
device and inode) and what was created there (device, inode, digest). Rollback (``guard``) acts only when
the entry in the ledger it was read from, the copy in the root's own ledger and the global copy agree, and
the filesystem still holds exactly what they describe, with no symbolic link anywhere on the path. Entries
written before this format (relative paths, no root) are refused with what to do instead: a relative path
names a different folder from every working directory, and nothing in such an entry tells which one it was.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import socket
import stat
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson

LEDGER_NAME = ".triage-ledger.jsonl"
FORMAT = 2


class LedgerError(RuntimeError):
    """An entry that must not be acted on (forged, changed, old format, or pointing outside its root)."""


def global_ledger() -> Path:
    """``$TRIAGE_HOME/ledger.jsonl``; else ``$XDG_STATE_HOME/triage``; else ``~/.local/state/triage``."""
    home = os.environ.get("TRIAGE_HOME")
    if not home:
        state = os.environ.get("XDG_STATE_HOME")
        if not state or not os.path.isabs(state):  # the XDG spec: a relative value is ignored
            state = os.path.join(os.path.expanduser("~"), ".local", "state")
        home = os.path.join(state, "triage")
    return Path(home) / "ledger.jsonl"


def identity(path: Path) -> dict:
    """Device and inode of ``path`` itself (a symbolic link is not followed)."""
    st = os.lstat(path)
    return {"dev": st.st_dev, "ino": st.st_ino}


def _append(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        torn = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
        # a torn last line (a crash mid-write) must not swallow this entry: start it on a line of its own
        fh.write((b"\n" if torn else b"") + orjson.dumps(entry) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def new_entry(action: str, **fields) -> dict:
    try:
        who = getpass.getuser()
    except Exception:
        who = "unknown"
    return {"id": uuid.uuid4().hex[:12], "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "who": f"{who}@{socket.gethostname()}", "action": action, **fields}


def rooted_entry(action: str, root: Path, **fields) -> dict:
    """A new entry for a change made inside ``root`` (an existing folder, resolved here)."""
    root = Path(root).resolve(strict=True)
    return new_entry(action, format=FORMAT, root=str(root), root_id=identity(root), **fields)


def record_rollback(of: str, beside: Path, store=None, **what) -> dict:
    """Record that entry ``of`` was rolled back (``what``: the paths removed or restored); returns the entry."""
    out = new_entry("rollback", of=of, **what)
    record(out, beside, store)
    return out


def record(entry: dict, beside: Path, store=None) -> None:
    """Append to the ledger beside the artifacts, to the global ledger, and to the store's table."""
    _append(Path(beside) / LEDGER_NAME, entry)
    if (Path(beside) / LEDGER_NAME).resolve() != global_ledger().resolve():
        _append(global_ledger(), entry)
    if store is not None:
        store.execute("CREATE TABLE IF NOT EXISTS remediations (id VARCHAR, ts VARCHAR, action VARCHAR, entry JSON)")
        store.execute("INSERT INTO remediations VALUES (?, ?, ?, ?)",
                      [entry["id"], entry["ts"], entry["action"], json.dumps(entry)])


def read(path: Path | None = None) -> tuple[list[dict], list[str]]:
    """(entries, problems): every line that is a JSON object with a string ``id`` and ``action``; each
    other line is skipped and described (file and line number), never fatal."""
    path = Path(path) if path else global_ledger()
    if not path.exists():
        return [], []
    try:
        data = path.read_bytes()
    except OSError as exc:  # a folder, no permission: reported like a bad line
        return [], [f"{path}: cannot read ({exc.strerror})"]
    out, problems = [], []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{path} line {n}: not JSON ({exc}); skipped")  # a torn line after a crash
            continue
        if not isinstance(e, dict):
            problems.append(f"{path} line {n}: a JSON {type(e).__name__}, not an object; skipped")
        elif not isinstance(e.get("id"), str) or not isinstance(e.get("action"), str):
            problems.append(f"{path} line {n}: no string \"id\" and \"action\"; skipped")
        else:
            out.append(e)
    return out, problems


def entries(path: Path | None = None) -> list[dict]:
    return read(path)[0]


def find(entry_id: str, path: Path | None = None) -> dict | None:
    found = [e for e in entries(path) if e["id"] == entry_id and e["action"] != "rollback"]
    return found[-1] if found else None


def rolled_back(entry_id: str, *paths: Path | None) -> bool:
    return any(e["action"] == "rollback" and e.get("of") == entry_id for p in (paths or (None,)) for e in entries(p))


# ---- the guard every rollback passes before it touches anything ----------------------------------------

def _abs_path(e: dict, key: str) -> Path:
    v = e.get(key)
    if not isinstance(v, str) or not v or "\0" in v:
        raise LedgerError(f"entry {e['id']}: field {key!r} is missing or not a path")
    p = Path(v)
    if not p.is_absolute() or ".." in p.parts or os.path.normpath(v) != v:
        raise LedgerError(f"entry {e['id']}: {key} {v!r} is not an absolute, normalised path")
    return p


def _identity_field(e: dict, key: str) -> dict:
    v = e.get(key)
    if not (isinstance(v, dict) and isinstance(v.get("dev"), int) and isinstance(v.get("ino"), int)):
        raise LedgerError(f"entry {e['id']}: field {key!r} (device and inode) is missing or malformed")
    return {"dev": v["dev"], "ino": v["ino"]}


def no_symlinks(path: Path) -> None:
    """Refuse ``path`` when any component of it is a symbolic link (or it does not resolve to itself)."""
    p = Path("/")
    for part in path.parts[1:]:
        p = p / part
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode):
                raise LedgerError(f"{p} is a symbolic link; triage does not follow links when it removes or "
                                  "restores anything")
        except FileNotFoundError:
            raise LedgerError(f"{p} does not exist (moved or removed since?); refusing") from None
    if os.path.realpath(path) != str(path):
        raise LedgerError(f"{path} does not resolve to itself")


def check_identity(path: Path, want: dict, what: str) -> None:
    if identity(path) != want:
        raise LedgerError(f"{path} is not the {what} triage recorded (another file or folder now has that path: "
                          "a copy, a move or a replacement); refusing")


def child(e: dict, key: str, root: Path, pattern: str) -> Path:
    """The absolute path in ``e[key]``: exactly one name inside ``root``, and that name matches ``pattern``."""
    p = _abs_path(e, key)
    if p.parent != root or not re.fullmatch(pattern, p.name):
        raise LedgerError(f"entry {e['id']}: {key} {str(p)!r} is not a file triage creates in {root}; refusing")
    return p


def guard(e: dict, ledger_path: Path | None = None) -> Path:
    """Check that ``e`` (read from ``ledger_path``, default the global ledger) describes a change triage made
    and that its root is still that folder; return the root. Raises LedgerError saying why not."""
    eid = e["id"]
    if "root" not in e:
        where = e.get("created") or e.get("config") or "the path it names"
        raise LedgerError(
            f"entry {eid} was written by an older triage, with paths relative to the folder it ran in "
            f"({where!r}); which folder that was is not recorded, so triage will not remove or restore anything. "
            "Check that path yourself and undo it by hand (delete the new version folder or file, or copy the "
            "backup over the config); new entries record absolute paths and can be rolled back")
    if e.get("format") != FORMAT:
        raise LedgerError(f"entry {eid}: unknown ledger format {e.get('format')!r} (this triage reads {FORMAT})")
    root = _abs_path(e, "root")
    no_symlinks(root)
    if not root.is_dir():
        raise LedgerError(f"entry {eid}: root {root} is not a folder")
    check_identity(root, _identity_field(e, "root_id"), "folder")
    local = root / LEDGER_NAME
    try:
        if not stat.S_ISREG(os.lstat(local).st_mode):
            raise LedgerError(f"{local} is not a regular file; refusing")
    except FileNotFoundError:
        raise LedgerError(f"entry {eid}: {root} holds no {LEDGER_NAME}, so triage made no change there; "
                          "refusing") from None
    copies = {"the ledger in " + str(root): local, "the global ledger " + str(global_ledger()): global_ledger()}
    if ledger_path is not None:
        copies[str(ledger_path)] = Path(ledger_path)
    for name, path in copies.items():
        mine = [x for x in entries(path) if x["id"] == eid]
        if not mine:
            raise LedgerError(f"entry {eid} is not in {name}; an entry must be in the root's ledger and in the "
                              "global one, identical, before triage acts on it")
        if any(x != e for x in mine):
            raise LedgerError(f"entry {eid} in {name} differs from the one being rolled back; refusing")
        if rolled_back(eid, path):
            raise LedgerError(f"{eid} was already rolled back")
    return root


def open_root(root: Path, want: dict) -> int:
    """A descriptor of ``root`` opened without following links, checked to be the recorded folder; the
    removal or restore then works relative to it, so a path swapped after the checks cannot redirect it."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: it became a link since it was checked
        raise LedgerError(f"{root} changed while rolling back ({exc.strerror}); refusing") from None
    st = os.fstat(fd)
    if {"dev": st.st_dev, "ino": st.st_ino} != want:
        os.close(fd)
        raise LedgerError(f"{root} changed while rolling back; refusing")
    return fd


def plain_tree(path: Path) -> None:
    """Refuse a tree holding anything but plain files and folders (a link inside could lead elsewhere)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        return
    if not stat.S_ISDIR(mode):
        raise LedgerError(f"{path} is neither a plain file nor a folder; refusing")
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            m = os.lstat(os.path.join(dirpath, name)).st_mode
            if not (stat.S_ISREG(m) or stat.S_ISDIR(m)):
                raise LedgerError(f"{os.path.join(dirpath, name)} is a link or special file; triage installed "
                                  "none; refusing")
