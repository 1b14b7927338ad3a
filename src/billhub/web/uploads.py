"""Photos attached to requests: checked by content, kept outside any web root.

Only JPEG, PNG and PDF are taken, recognised by their first bytes (the name and the
browser's content type are ignored), up to the configured size. A refused upload
leaves nothing behind: it is checked in memory before anything is written. Files
are named by a random id with no extension, in a folder the web service never
serves as static files; staff read them through a route that checks permissions
and sends them as attachments.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from billhub.requests.model import RequestError

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"%PDF-", "application/pdf"),
)


def sniff(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


@dataclass(frozen=True, slots=True)
class Checked:
    content_type: str
    data: bytes
    sha256: str


def check(data: bytes, limit: int) -> Checked:
    """The upload's type by content, or RequestError (``upload_too_large``, ``upload_type``)."""
    if len(data) > limit:
        raise RequestError(
            "upload_too_large",
            f"the file is larger than {limit // 1024} KiB",
            f"حجم الملف أكبر من {limit // 1024} كيلوبايت",
            "photo",
        )
    kind = sniff(data[:16])
    if kind is None:
        raise RequestError(
            "upload_type",
            "only a JPEG or PNG photo or a PDF",
            "يُقبل فقط صورة JPEG أو PNG أو ملف PDF",
            "photo",
        )
    return Checked(kind, data, hashlib.sha256(data).hexdigest())


class UploadStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, checked: Checked) -> str:
        """Write the file (temporary name, then renamed) and return its id."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident = secrets.token_hex(16)
        tmp = self.folder / f".{ident}.part"
        with open(tmp, "wb") as f:
            f.write(checked.data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self.folder / ident)
        return ident

    def read(self, ident: str) -> bytes | None:
        if not ident.isalnum() or len(ident) != 32:
            return None
        path = self.folder / ident
        return path.read_bytes() if path.is_file() else None

    def remove(self, ident: str) -> None:
        if ident.isalnum() and len(ident) == 32:
            (self.folder / ident).unlink(missing_ok=True)
