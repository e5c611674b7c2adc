"""Command-line interface: serve, migrate, create-user, shell (and the job worker)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from enum import StrEnum
from typing import Any

import typer

cli = typer.Typer(help="event-booking-api command line", no_args_is_help=True)


class RoleChoice(StrEnum):
    organizer = "organizer"
    attendee = "attendee"


def _prepare_multiprocess_metrics() -> None:
    """Workers share their Prometheus counters through files in one fresh directory."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="event-booking-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", envvar="HOST"),
    port: int = typer.Option(8000, envvar="PORT"),
    workers: int = typer.Option(1, envvar="WEB_CONCURRENCY", min=1, help="Worker processes."),
    reload: bool = False,
) -> None:
    """Serve the API (embedded PostgreSQL under .data/ when DATABASE_URL is unset)."""
    import uvicorn

    from app.core.config import get_settings
    from app.core.server import ServerConfig, run

    settings = get_settings()
    if not settings.database_url:
        typer.echo("DATABASE_URL is unset: using the embedded PostgreSQL under .data/")
        if workers > 1 and not reload:
            # Start the server and migrate once here, then hand the URL to every worker.
            from app.core.db import resolve_database_url
            from app.core.migrate import upgrade_head

            url = resolve_database_url(settings)
            upgrade_head(url)
            os.environ["DATABASE_URL"] = url
    if workers > 1 and not reload:
        _prepare_multiprocess_metrics()
    typer.echo(f"Swagger UI: http://{host}:{port}/api/docs/swagger")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        # X-Forwarded-For is believed only from TRUSTED_PROXIES (the app's middleware).
        "proxy_headers": False,
    }
    if reload:
        uvicorn.run("app.main:app", reload=True, **options)
    else:
        run(ServerConfig("app.main:app", workers=workers, **options))


@cli.command()
def migrate() -> None:
    """Apply the Alembic migrations (alembic upgrade head)."""
    from app.core.config import get_settings
    from app.core.db import resolve_database_url
    from app.core.migrate import upgrade_head

    upgrade_head(resolve_database_url(get_settings()))
    typer.echo("database is at head")


async def _create_user(
    username: str, email: str, password: str, role: str, *, staff: bool = False
) -> int:
    from sqlalchemy import func, or_, select

    from app.auth.models import User
    from app.core.config import get_settings
    from app.core.db import create_engine, make_sessionmaker, resolve_database_url
    from app.core.security import hash_password

    settings = get_settings()
    url = resolve_database_url(settings)
    if not settings.database_url:
        from app.core.migrate import upgrade_head

        await asyncio.to_thread(upgrade_head, url)
    engine = create_engine(settings, url, pool_size=1, max_overflow=0)
    try:
        async with make_sessionmaker(engine)() as session:
            clash = await session.scalar(
                select(User).where(
                    or_(func.lower(User.username) == username.lower(), User.email == email)
                )
            )
            if clash is not None:
                taken = "username" if clash.username.lower() == username.lower() else "email"
                raise typer.BadParameter(f"a user with that {taken} already exists")
            user = User(
                username=username,
                email=email,
                hashed_password=await hash_password(password),
                role=role,
                is_active=True,
                is_staff=staff,
            )
            session.add(user)
            await session.commit()
            return user.id
    finally:
        await engine.dispose()


@cli.command("create-user")
def create_user(
    username: str = typer.Option(..., prompt=True, help="3-150 letters, digits and @.+-_"),
    email: str = typer.Option(..., prompt=True),
    role: RoleChoice = typer.Option(RoleChoice.organizer, help="organizer or attendee"),
    password: str = typer.Option(
        ...,
        envvar="CREATE_USER_PASSWORD",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="Prompted for when not given (or set CREATE_USER_PASSWORD).",
    ),
    staff: bool = typer.Option(
        False, "--staff", help="May sign in to the staff console at /admin."
    ),
) -> None:
    """Create a user directly in the database (an organizer by default)."""
    import re

    from email_validator import EmailNotValidError, validate_email

    if not re.fullmatch(r"[\w.@+-]{3,150}", username, flags=re.ASCII):
        raise typer.BadParameter("3-150 letters, digits and @.+-_", param_hint="--username")
    try:
        email = validate_email(email, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise typer.BadParameter(str(exc), param_hint="--email") from None
    if len(password) < 8 or password.isdigit():
        raise typer.BadParameter("at least 8 characters, not all digits", param_hint="--password")
    user_id = asyncio.run(_create_user(username, email, password, role.value, staff=staff))
    kind = f"staff {role.value}" if staff else role.value
    typer.echo(f"created {kind} {username!r} (id {user_id})")


def _shell_namespace() -> dict[str, Any]:
    import sqlalchemy

    import app.models as models
    from app.core.config import get_settings
    from app.core.db import create_engine, make_sessionmaker, resolve_database_url

    settings = get_settings()
    engine = create_engine(settings, resolve_database_url(settings))
    namespace: dict[str, Any] = {
        "settings": settings,
        "engine": engine,
        "sessionmaker": make_sessionmaker(engine),
        "select": sqlalchemy.select,
        "func": sqlalchemy.func,
        "text": sqlalchemy.text,
        "asyncio": asyncio,
    }
    namespace.update({name: getattr(models, name) for name in models.__all__})
    return namespace


def _run_async_repl(namespace: dict[str, Any], banner: str) -> None:
    """Like `python -m asyncio`: the loop runs in this thread, the console in another,
    and each input that awaits runs as a task on the loop."""
    import ast
    import code
    import inspect
    import threading
    import types

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    class AsyncConsole(code.InteractiveConsole):
        def __init__(self) -> None:
            super().__init__(namespace)
            self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

        def runcode(self, code_object: types.CodeType) -> None:
            try:
                result = types.FunctionType(code_object, namespace)()
                if inspect.iscoroutine(result):
                    asyncio.run_coroutine_threadsafe(result, loop).result()
            except SystemExit:
                raise
            except BaseException:
                self.showtraceback()

    def interact() -> None:
        try:
            AsyncConsole().interact(banner=banner, exitmsg="")
        except SystemExit:
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)

    console = threading.Thread(target=interact, name="shell", daemon=True)
    console.start()
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(namespace["engine"].dispose())
        loop.close()


@cli.command()
def shell() -> None:
    """An asyncio REPL (top-level await) with settings, engine, sessionmaker and the models."""
    namespace = _shell_namespace()
    banner = (
        "event-booking-api shell: top-level await works.\n"
        f"In scope: {', '.join(sorted(namespace))}\n"
        "e.g.  async with sessionmaker() as s: print(await s.scalar(select(func.count(User.id))))"
    )
    _run_async_repl(namespace, banner)


@cli.command()
def worker(burst: bool = typer.Option(False, help="Stop once the queue is empty.")) -> None:
    """Run the background worker: it sends the outbox (emails and webhooks)."""
    from app.core.config import get_settings
    from app.core.logging import configure_logging
    from app.worker import make_worker, new_event_loop

    settings = get_settings()
    if not settings.redis_url:
        typer.echo("REDIS_URL is unset: without Redis the API sends emails itself.", err=True)
        raise typer.Exit(2)
    # The API's log format (LOG_FORMAT) and buffered lines, for arq's lines as for ours.
    configure_logging(settings)
    asyncio.set_event_loop(new_event_loop())
    make_worker(settings, burst=burst).run()
