"""The billhub exception tree.

Every error billhub raises on purpose derives from :class:`BillhubError`, so an
edge (a socket loop, the CLI) can catch one type and answer cleanly instead of
letting a traceback reach a user or the wire::

    BillhubError
    ├── ConfigError            a bad configuration file or value (names the key)
    ├── ProtocolError          the link's protocol was broken
    │   ├── LocalProtocolError   by us: we tried to build or send something invalid
    │   └── RemoteProtocolError  by the peer
    │       ├── FramingError       the byte stream cannot be trusted: close the link
    │       └── DecodeError        one frame is undecodable: answer `30`, keep the link
    ├── LinkClosed             the link went away while a request was waiting
    ├── RequestTimeout         no answer to our request within its timeout
    ├── TlsRefused             a peer failed mutual authentication
    ├── BillerError            a biller call failed
    │   ├── BillerTimeout        no answer in time
    │   ├── BillerUnavailable    connection refused or lost, 5xx, 401
    │   └── BillerRejected       a 4xx refusal defined by the biller contract
    ├── JournalError           the journal could not record or read
    ├── JournalRefusal         the journal kept an invariant and did not write
    │   ├── KeyReversed          a reversal of this payment's key came first (6.4)
    │   ├── DateClosed           a cutover closed this payment's settlement date (6.1)
    │   ├── KeyTaken             a payment of this reversal's key was recorded meanwhile
    │   └── BillTaken            another payment took a bill this one would pay
    └── SchemaTooNew           a database file written by a newer billhub

Error messages never carry raw frames or field values: a frame may hold an
account number, and messages end up in logs.
"""

from __future__ import annotations


class BillhubError(Exception):
    """Root of every error billhub raises on purpose."""


class ConfigError(BillhubError):
    """A configuration value is missing or invalid; the message names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class ProtocolError(BillhubError):
    """The link protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode or send something the spec does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the spec does not allow."""


class FramingError(RemoteProtocolError):
    """The byte stream is corrupt (bad length, truncated frame): the link must close.

    A byte stream cannot be resynchronised after a bad length, so the only
    recovery is to close the link; other links are unaffected.
    """


class DecodeError(RemoteProtocolError):
    """A whole frame arrived but its message could not be decoded.

    ``field`` and ``offset`` say where decoding stopped and ``expected`` what the
    spec wanted there; the raw bytes are deliberately not kept. ``mti``,
    ``de7``, ``de11`` and ``de32`` hold what could be read before the failure
    (``None`` otherwise) so that the link can still answer `30` with the
    echoed fields that the switch needs to match the answer.
    """

    def __init__(
        self,
        field: str,
        offset: int,
        expected: str,
        *,
        mti: str | None = None,
        de7: str | None = None,
        de11: str | None = None,
        de32: str | None = None,
    ) -> None:
        super().__init__(f"field {field} at offset {offset}: expected {expected}")
        self.field = field
        self.offset = offset
        self.expected = expected
        self.mti = mti
        self.de7 = de7
        self.de11 = de11
        self.de32 = de32


class LinkClosed(BillhubError):
    """The link closed while a request on it was waiting for its answer."""


class RequestTimeout(BillhubError):
    """A request we sent got no answer within its timeout."""


class TlsRefused(BillhubError):
    """A peer failed mutual TLS authentication; ``reason`` is a short stable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BillerError(BillhubError):
    """A call to a biller did not give a usable answer."""


class BillerTimeout(BillerError):
    """The biller did not answer within the time budget."""


class BillerUnavailable(BillerError):
    """The biller could not be reached or answered outside its contract."""


class BillerRejected(BillerError):
    """The biller refused the request with a contract error code."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class JournalError(BillhubError):
    """The journal could not durably record or read."""


class JournalRefusal(BillhubError):
    """The journal refused a write that would break one of its invariants.

    Not a failure: the journal works, and the caller turns the refusal into its
    answer. The invariants are kept where every hub instance sees them (in the
    database), so that two instances can never both act on a stale view.
    """


class KeyReversed(JournalRefusal):
    """A reversal of this payment's key was recorded before any payment of it."""


class DateClosed(JournalRefusal):
    """A cutover closed this payment's settlement date before it could be recorded."""


class KeyTaken(JournalRefusal):
    """A reversal with no original found one recorded meanwhile (by another instance)."""


class BillTaken(JournalRefusal):
    """Another payment (on any instance) took a bill this payment would pay."""


class SchemaTooNew(BillhubError):
    """A database file's schema is newer than this billhub knows: it is not written to,
    since an older hub would misread it. ``found`` and ``known`` say which."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"schema {found} is newer than this billhub's {known}")
        self.found = found
        self.known = known
