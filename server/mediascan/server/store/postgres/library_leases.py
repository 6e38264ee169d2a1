"""Library leases on PostgreSQL: single-owner work (watching a library, its schedule) runs on
one server at a time, the holder named in `libraries.owner` until `lease_until` (the
database's clock). A holder renews its leases; one that stops renewing (it died, froze or
lost the database) loses them once they lapse, to the next server that asks.

One round (`lease`) is one transaction: the server's own rows are locked in id order (the
order of the change logs' locks, so the two never deadlock) and kept or let go; then free or
lapsed libraries are taken with `FOR UPDATE SKIP LOCKED`, so two servers asking at once take
different ones and never wait on each other."""

from __future__ import annotations

from collections.abc import Sequence

from .jobs import LEASE_UNTIL
from .schema import Connection

#: SQL true when the row's root is or lies below one of the roots %s, %s (none: any root).
_WITHIN = (
    "(cardinality(%s::text[]) = 0 OR EXISTS (SELECT 1 FROM unnest(%s::text[]) AS r(root)"
    " WHERE libraries.root = rtrim(r.root, '/')"
    " OR starts_with(libraries.root, rtrim(r.root, '/') || '/')))"
)
_OWNED = f"SELECT id, {_WITHIN} FROM libraries WHERE owner = %s ORDER BY id FOR UPDATE"
_RENEW = f"UPDATE libraries SET lease_until = {LEASE_UNTIL} WHERE id = ANY(%s)"
_LET_GO = "UPDATE libraries SET owner = '', lease_until = NULL WHERE owner = %s AND id = ANY(%s)"
_TAKE = (
    f"UPDATE libraries SET owner = %s, lease_until = {LEASE_UNTIL} WHERE id IN ("
    " SELECT id FROM libraries WHERE owner <> %s AND (lease_until IS NULL OR lease_until <= now())"
    f" AND {_WITHIN} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id"
)
#: `Library.status.node`: the holder while its lease lasts.
HOLDER = "CASE WHEN lease_until > now() THEN owner ELSE '' END"


async def lease(
    conn: Connection, *, node: str, lease_s: float, roots: Sequence[str], limit: int
) -> list[str]:
    """Renew `node`'s leases within `roots` (the first `limit` by id; the rest let go), then
    take free or lapsed ones within `roots` up to `limit` in all; the ids held, sorted."""
    folders = list(roots)
    cursor = await conn.execute(_OWNED, (folders, folders, node))
    owned = [(str(library_id), bool(within)) for library_id, within in await cursor.fetchall()]
    kept = [library_id for library_id, within in owned if within][: max(limit, 0)]
    keep = set(kept)
    dropped = [library_id for library_id, _ in owned if library_id not in keep]
    if kept:
        await conn.execute(_RENEW, (lease_s, kept))
    if dropped:
        await conn.execute(_LET_GO, (node, dropped))
    taken: list[str] = []
    wanted = limit - len(kept)
    if wanted > 0:
        params = (node, lease_s, node, folders, folders, wanted)
        cursor = await conn.execute(_TAKE, params)
        taken = [str(library_id) for (library_id,) in await cursor.fetchall()]
    return sorted(kept + taken)


async def release(conn: Connection, *, node: str, library_ids: Sequence[str]) -> None:
    """Let go of these libraries, those `node` holds."""
    await conn.execute(_LET_GO, (node, list(library_ids)))
