"""EventRecorder against a real store: batches, a refused event, waiting for a commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store import Event
from sidecar.events import EventRecorder
from tests.conftest import open_test_store

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def test_a_refused_event_is_dropped_and_the_rest_written(tmp_path: Path) -> None:
    async with await open_test_store(tmp_path) as store:
        recorder = EventRecorder(store.record_tracking)
        recorder.start()
        good = [Event("open", float(i), details={"source": "human"}) for i in range(5)]
        bad = Event("bogus", 2.5)  # not in the vocabulary: the CHECK constraint refuses it
        recorder.add(good[:3])
        waited = recorder.add_waitable(bad)
        recorder.add(good[3:])
        await recorder.close(5.0)
        assert waited.done() and waited.exception() is not None
        assert recorder.dropped == 1 and recorder.written == 5
        assert [e["type"] for e in await store.events_after(0)] == ["open"] * 5


async def test_waitable_completes_on_commit(tmp_path: Path) -> None:
    async with await open_test_store(tmp_path) as store:
        recorder = EventRecorder(store.record_tracking)
        recorder.start()
        fut = recorder.add_waitable(Event("click", 1.0, details={"source": "scanner"}))
        await fut
        assert recorder.batches == 1
        await recorder.close()
