"""Which asyncio event loop a long-running process runs on: uvloop where installed.

The hub and the simulated switch spend a good part of every message in the event loop
and its TLS transport (``bench/README.md``); uvloop (libuv, its SSL protocol in
Cython) does that work for less CPU than the standard library's loop. It is a
dependency on every platform it supports, so ``"auto"`` means uvloop there; where it
cannot be imported (another platform, a stripped install) ``"auto"`` falls back to the
standard loop, which is always correct, only slower. ``"asyncio"`` forces the standard
loop, e.g. to compare the two or to rule uvloop out when chasing a problem.

Everything billhub does on a loop (``add_reader`` on the listening socket,
``connect_accepted_socket`` with ``ssl`` and ``ssl_handshake_timeout``,
``get_extra_info("ssl_object")`` for the peer certificate, signal handlers) exists on
both loops; ``tests/test_eventloop.py`` runs the mutual-TLS link on each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from billhub.errors import ConfigError

__all__ = ["EVENT_LOOPS", "EventLoopChoice", "loop_factory", "loop_name", "run", "uvloop_available"]

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoopChoice, ...] = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def loop_factory(
    choice: EventLoopChoice = "auto", *, key: str = "server.event_loop"
) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new event loops of the chosen kind (for :class:`asyncio.Runner`).

    Raises :class:`~billhub.errors.ConfigError` naming ``key`` when ``"uvloop"`` is
    asked for and cannot be imported, or the choice is not one of :data:`EVENT_LOOPS`.
    """
    if choice not in EVENT_LOOPS:
        raise ConfigError(key, f"must be one of {', '.join(EVENT_LOOPS)}")
    if choice != "asyncio":
        try:
            import uvloop  # noqa: PLC0415
        except ImportError:
            if choice == "uvloop":
                raise ConfigError(key, "uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(
    main: Coroutine[Any, Any, T],
    choice: EventLoopChoice = "auto",
    *,
    key: str = "server.event_loop",
) -> T:
    """``asyncio.run(main)`` on a loop of the chosen kind."""
    try:
        factory = loop_factory(choice, key=key)
    except ConfigError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: what the (running) loop is, for the start-up log line."""
    loop = loop or asyncio.get_running_loop()
    return type(loop).__module__.split(".", 1)[0]
