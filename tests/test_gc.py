"""Workers freeze their start-up objects, so full collections do not stall requests."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from commons_session.config import Settings
from commons_session.http.app import create_app


def test_start_up_objects_are_frozen_out_of_the_collector(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'gc.db'}"))
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    async def start_and_stop() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    try:
        frozen = asyncio.run(start_and_stop())
    finally:
        gc.unfreeze()
    # Everything alive at start-up, the app and its modules included: thousands of objects.
    assert frozen > 10_000
