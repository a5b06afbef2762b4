"""Bundled sample incidents (each a folder: traces, metrics, README). ``generate.py`` rebuilds them."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT = "slow-tokenizer"


def path(name: str = DEFAULT) -> Path:
    return ROOT / name


def names() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "README.md").is_file())
