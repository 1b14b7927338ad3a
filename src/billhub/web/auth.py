"""Staff passwords (argon2id, memory-hard), session tokens and CSRF tokens.

A session cookie holds a random token; the store keeps only its SHA-256, so a
copy of the database opens no session. Each session has its own CSRF token,
which every form carries and every POST must match (constant-time compare).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()  # argon2id with the library's recommended parameters
#: Verified against when the user does not exist, so timing does not tell.


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user is unknown, so both paths cost the same.

    Made on first use, not at import: argon2 is slow on purpose, and every command
    of the CLI imports this module's package.
    """
    return _HASHER.hash("not a password of anyone")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_password() -> str:
    return secrets.token_urlsafe(12)
