"""The one line between a usage error and a bug.

``UsageError`` is raised for the user: something triage was given is wrong (an argument, a file, an
environment variable, a setting that contradicts another), and its message says what to change. The CLI
answers it, and an ``OSError`` (a missing or unreadable file, a port in use), with exit 2 and the message.
Anything else that escapes a command is a bug: exit 70, one line, the traceback with ``--debug``.
Every module may import this one; it imports nothing of triage.
"""
from __future__ import annotations


class UsageError(ValueError):
    """Something the user gave triage is wrong; the message names it and what to change."""
