"""Write the headless report of every bundled input, or compare two such folders byte for byte.

A refactor that must not change behaviour (issue 13) is checked with it: reports written before the change
and after it must be identical, in both formats, on every bundled sample incident, the real Triton and vLLM
captures, the capture matrix and the third-party trace fixtures.

    python scripts/report_snapshots.py write /tmp/before     # on the old commit
    python scripts/report_snapshots.py write /tmp/after      # on the new one
    python scripts/report_snapshots.py diff /tmp/before /tmp/after

It runs the installed ``triage`` command (the one beside this Python), so the old and the new layout are
driven through the same contract: the CLI, not module paths. Exit code of each run is kept with its output.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def inputs() -> list[tuple[str, Path]]:
    """Every bundled input a report can be written for, with a stable name."""
    found: list[tuple[str, Path]] = []
    for folder in sorted((ROOT / "sample_traces").iterdir()):
        if folder.is_dir() and (folder / "otlp").exists():
            found.append((f"sample-{folder.name}", folder))
    for folder in sorted((ROOT / "tests" / "fixtures" / "captures").iterdir()):
        if folder.is_dir():
            found.append((f"capture-{folder.name}", folder))
    for folder in sorted((ROOT / "tests" / "fixtures" / "matrix").iterdir()):
        if folder.is_dir():
            found.append((f"matrix-{folder.name}", folder))
    for file in sorted((ROOT / "tests" / "fixtures" / "traces").iterdir()):
        if file.is_file():
            found.append((f"trace-{file.name}", file))
    return found


def _triage() -> str:
    beside = Path(sys.executable).parent / "triage"
    return str(beside) if beside.exists() else "triage"


def _one(out: Path, name: str, path: Path) -> str:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="120")
    for fmt in ("json", "md"):
        run = subprocess.run(
            [_triage(), "report", str(path), "--format", fmt],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
        )
        (out / f"{name}.{fmt}").write_text(f"exit {run.returncode}\n{run.stdout}")
    return name


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name in pool.map(lambda item: _one(out, *item), inputs()):
            print(name)


def diff(before: Path, after: Path) -> int:
    names = sorted({p.name for p in before.iterdir()} | {p.name for p in after.iterdir()})
    changed = 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"only in {'after' if not a.exists() else 'before'}: {name}")
            changed += 1
            continue
        if a.read_bytes() != b.read_bytes():
            changed += 1
            print(f"differs: {name}")
            sys.stdout.writelines(difflib.unified_diff(
                a.read_text().splitlines(True), b.read_text().splitlines(True), str(a), str(b), n=1))
    print(f"{len(names) - changed} of {len(names)} reports identical")
    return 1 if changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("out", type=Path)
    d = sub.add_parser("diff")
    d.add_argument("before", type=Path)
    d.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out)
        return 0
    return diff(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
