"""Text helpers shared by screens (Rich markup only, no widgets)."""
from __future__ import annotations

SEVERITY_STYLE = {"error": "bold white on magenta", "critical": "bold white on red", "warning": "bold black on dark_orange", "info": "dim"}


def badge(severity: str) -> str:
    return f"[{SEVERITY_STYLE.get(severity, '')}] {severity.upper():<8} [/]"


def share_bar(share: float, width: int = 20) -> str:
    n = max(0, min(width, round(share * width)))
    color = "red" if share >= 0.3 else "yellow" if share >= 0.15 else "green"
    return f"[{color}]{'█' * n}[/][dim]{'·' * (width - n)}[/]"


def esc(text) -> str:
    """Data shown inside Rich markup: '[budget]' must print, not vanish as a tag."""
    from rich.markup import escape

    return escape(str(text))


def fmt_value(v) -> str:
    """A value for display, already escaped for markup."""
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, list):
        return ", ".join(fmt_value(x) for x in v[:6]) + (" …" if len(v) > 6 else "")
    if isinstance(v, dict):
        return "; ".join(f"{esc(k)}={fmt_value(x)}" for k, x in list(v.items())[:8])
    return esc(v)
