"""Response codes (LINK-SPEC 5) and MTI classes (LINK-SPEC 1, 6): their one owner.

Everything that answers, matches or routes by a code or a class names it from
here, so that a code's meaning is written down once and a grep finds every
place that gives it.
"""

from __future__ import annotations

from typing import Final

# -- DE 39 response codes ---------------------------------------------------------------
APPROVED: Final = "00"
INVALID_TRANSACTION: Final = "12"  # unknown processing code or MTI; a 0500 for an open date
INVALID_AMOUNT: Final = "13"
INVALID_ACCOUNT: Final = "14"
NO_ORIGINAL: Final = "25"
FORMAT_ERROR: Final = "30"
NOTHING_DUE: Final = "51"
NOT_PERMITTED: Final = "58"
CUTOFF: Final = "90"
UNAVAILABLE: Final = "91"  # biller unavailable, not signed on, shutting down
UNKNOWN_BILLER: Final = "92"
DUPLICATE: Final = "94"
RECONCILE_ERROR: Final = "95"
MALFUNCTION: Final = "96"

#: What each code means, as the switch interface names it (specs/response-codes.md).
MEANINGS: Final = {
    APPROVED: "approved",
    INVALID_TRANSACTION: "invalid transaction",
    INVALID_AMOUNT: "invalid amount",
    INVALID_ACCOUNT: "invalid subscriber account",
    NO_ORIGINAL: "unable to locate original",
    FORMAT_ERROR: "format error",
    NOTHING_DUE: "nothing due",
    NOT_PERMITTED: "transaction not permitted",
    CUTOFF: "cutoff in process",
    UNAVAILABLE: "biller unavailable",
    UNKNOWN_BILLER: "unknown biller: no [[billers]] entry has this code",
    DUPLICATE: "duplicate transmission",
    RECONCILE_ERROR: "reconcile error",
    MALFUNCTION: "system malfunction",
}

# -- DE 70 network management codes -----------------------------------------------------
SIGN_ON: Final = "001"
SIGN_OFF: Final = "002"
CUTOVER: Final = "201"
ECHO: Final = "301"

# -- DE 3 processing codes --------------------------------------------------------------
INQUIRY: Final = "310000"
PAYMENT: Final = "500000"

# -- MTI classes (the MTI's first two digits) -------------------------------------------
FINANCIAL: Final = "02"  # 0200/0201 inquiry and payment
REVERSAL: Final = "04"  # 0420/0421
RECONCILIATION: Final = "05"  # 0500
NETWORK: Final = "08"  # 0800
#: The classes a link that is not signed on answers `91`, and a draining hub refuses.
FINANCIAL_CLASSES: Final = frozenset({FINANCIAL, REVERSAL, RECONCILIATION})


def mti_class(mti: str) -> str:
    """The class of an MTI: its first two digits (how a response finds its request)."""
    return mti[:2]


def is_response(mti: str) -> bool:
    """Whether an MTI is a response (0210, 0430, 0510, 0810...) or an advice response."""
    return mti[2] in "13"
