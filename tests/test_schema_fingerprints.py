"""An upgrade to the schema of fingerprints and health (SQLite version 6) keeps every video:
a database of version 5 with videos is migrated in place, its videos keep their ids, have no
fingerprint until their files are probed again, and a `full` scan fills them in."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from _library_helpers import all_videos, real, scan, tiny_video

from mediascan.server.store.sqlite.schema import ORDERED_COLUMNS, SCHEMA_VERSION

NEW_COLUMNS = (
    "fingerprint",
    "health",
    "health_errors",
    "health_messages",
    "health_first_error_ns",
    "verify_ns",
)


def downgrade_to_version_5(db: Path) -> None:
    """The database as version 5 wrote it: without the columns and indexes of version 6 (and
    the indexes of version 7)."""
    conn = sqlite3.connect(db)
    try:
        for column in ORDERED_COLUMNS:
            conn.execute(f"DROP INDEX videos_by_{column}")
        conn.execute("DROP INDEX videos_by_fingerprint")
        conn.execute("DROP INDEX videos_by_health")
        for column in NEW_COLUMNS:
            conn.execute(f"ALTER TABLE videos DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
        conn.commit()
    finally:
        conn.close()


async def test_a_version_5_library_is_kept_and_fingerprinted_by_a_full_scan(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    assert SCHEMA_VERSION >= 6
    db = tmp_path / "old.db"
    folder = tmp_path / "lib"
    for name in ("a.mp4", "b.mp4"):
        tiny_video(folder / name)
    old = await make_server(db=db)
    await scan(await connect(old.address), folder)
    await old.stop()
    downgrade_to_version_5(db)

    server = await make_server(db=db)
    stub = await connect(server.address)
    kept = {v.path: v for v in await all_videos(stub, path_prefix=real(folder))}
    assert len(kept) == 2 and all(not v.fingerprint and not v.health for v in kept.values())
    job = await scan(stub, folder)  # unchanged: not probed, so no fingerprint yet
    assert job.result.unchanged == 2
    job = await scan(stub, folder, full=True)
    assert job.result.updated == 2
    now = {v.path: v for v in await all_videos(stub, path_prefix=real(folder))}
    assert {p: v.video_id for p, v in now.items()} == {p: v.video_id for p, v in kept.items()}
    assert all(v.fingerprint.startswith(f"{v.size_bytes}-") for v in now.values())
