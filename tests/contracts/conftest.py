"""The contract suites' fixtures: every test here runs once per kind of adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.contracts.kinds import JOURNAL_KINDS, SETTLEMENT_KINDS, FactoryPlace, JournalPlace

from billhub.journal.factory import JournalSet


@pytest.fixture(params=sorted(JOURNAL_KINDS))
def place(request: pytest.FixtureRequest) -> JournalPlace:
    return JOURNAL_KINDS[request.param](request)


@pytest.fixture
async def journal(place: JournalPlace) -> AsyncIterator[Any]:
    j = place.new()
    await j.open()
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture(params=sorted(SETTLEMENT_KINDS))
def sql_place(request: pytest.FixtureRequest) -> FactoryPlace:
    return SETTLEMENT_KINDS[request.param](request)


@pytest.fixture
async def stores(sql_place: FactoryPlace) -> AsyncIterator[JournalSet]:
    js = sql_place.new_set()
    await js.open()
    try:
        yield js
    finally:
        await js.close()
