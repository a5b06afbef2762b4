"""Problems found in input files: counted and reported with file and line or byte offset, never raised."""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_LISTED = 200  # keep the report readable; counts stay exact


@dataclass
class Problems:
    items: list[dict] = field(default_factory=list)
    count: int = 0

    def add(self, path: str, where: str, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_LISTED:
            self.items.append({"path": path, "where": where, "message": message})

    def merge(self, other: "Problems") -> None:
        self.count += other.count
        room = MAX_LISTED - len(self.items)
        if room > 0:
            self.items.extend(other.items[:room])
