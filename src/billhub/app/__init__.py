"""The composition: one module per process or command, wiring the parts through their ports.

``hub`` (``billhub serve``), ``clearing`` (``report``, ``settle import``), ``ops``
(``status``, ``journal show``), ``demo``. Nothing below this package imports it;
:mod:`billhub.cli` is the entry point that parses a command and calls one of them.
"""
