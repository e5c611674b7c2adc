"""The unit of work's asyncpg connection is inside its transaction from the start, direct
and through PgBouncer (outside one, row locks would end with each statement, a change of
several statements could half commit, and through a pooler a statement may reach another
server connection)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.db import UnitOfWork, create_engine, make_sessionmaker, raw_connection
from deploy.services import find_binary, start_pgbouncer
from tests.factories import make_settings


@pytest.fixture(params=["direct", "pgbouncer"])
async def sessionmaker(request, database_url, tmp_path_factory):
    url, bouncer = database_url, None
    if request.param == "pgbouncer":
        if find_binary("pgbouncer") is None:
            pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        parsed = make_url(database_url)
        bouncer = start_pgbouncer(
            tmp_path_factory.mktemp("uow-bouncer"),
            server_host=parsed.host or str(parsed.query.get("host")),
            server_port=parsed.port or 5432,
            users=(parsed.username or "postgres",),
            pool_size=2,
        )
        query = {k: v for k, v in parsed.query.items() if k != "host"}
        url = parsed.set(host="127.0.0.1", port=bouncer.port, query=query).render_as_string(
            hide_password=False
        )
    settings = make_settings(url, db_pooler="none" if bouncer is None else "pgbouncer")
    engine = create_engine(settings, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
        if bouncer is not None:
            bouncer.stop()


class Boom(Exception):
    pass


async def test_raw_connection_statements_are_part_of_the_unit_of_work(
    sessionmaker, db, organizer
) -> None:
    """Even as the first thing a unit of work sends: one transaction, rolled back whole."""
    with pytest.raises(Boom):
        async with UnitOfWork(sessionmaker) as uow:
            conn = await raw_connection(uow.session)
            assert conn.is_in_transaction()
            first = await conn.fetchval("SELECT txid_current()")
            await conn.execute("UPDATE users SET username = 'changed' WHERE id = $1", organizer.id)
            assert await conn.fetchval("SELECT txid_current()") == first
            raise Boom
    async with db() as s:
        name = await s.scalar(text("SELECT username FROM users WHERE id = :i"), {"i": organizer.id})
    assert name != "changed"
