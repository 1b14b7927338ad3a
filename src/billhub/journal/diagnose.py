"""Why a journal file cannot be opened, in one line an operator can act on.

SQLite says ``unable to open database file`` for a missing folder, a read-only
folder (it must create the ``-wal`` and ``-shm`` files beside the database), a
read-only file and a path that is a folder alike. The hub names the
configuration key and the actual reason instead.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

KEY = "journal.path"


def open_failure(path: Path, exc: BaseException) -> str:
    """``journal.path: cannot open /x/billhub.db: <reason>`` for ``exc`` raised opening it."""
    return f"{KEY}: cannot open {path}: {_reason(path, exc)}"


def _reason(path: Path, exc: BaseException) -> str:
    if path.is_dir():
        return "it is a folder, not a database file"
    folder = _first_existing(path.parent)
    if folder != path.parent:
        if not folder.is_dir():
            return f"{folder} is not a folder"
        return f"the folder {path.parent} does not exist and cannot be created here"
    if not path.parent.is_dir():
        return f"{path.parent} is not a folder"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"the folder {path.parent} is read-only (the journal writes its -wal file there)"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return "the file is read-only or not readable"
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return "the file is not a billhub journal (not an SQLite database)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text


def _first_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
