"""Command-line interface: serve, migrate, create-user, shell, worker."""

from __future__ import annotations

import typer

cli = typer.Typer(help="event-booking-api command line", no_args_is_help=True)


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", envvar="HOST"),
    port: int = typer.Option(8000, envvar="PORT"),
    workers: int = typer.Option(1, envvar="WEB_CONCURRENCY"),
    reload: bool = False,
) -> None:
    """Serve the API (embedded PostgreSQL under .data/ when DATABASE_URL is unset)."""
    import uvicorn

    from app.core.config import get_settings

    settings = get_settings()
    if not settings.database_url:
        typer.echo("DATABASE_URL is unset: using the embedded PostgreSQL under .data/")
    typer.echo(f"Swagger UI: http://{host}:{port}/api/docs/swagger")
    uvicorn.run("app.main:app", host=host, port=port, workers=workers, reload=reload)


@cli.command()
def migrate() -> None:
    """Apply the Alembic migrations (alembic upgrade head)."""
    from app.core.migrate import upgrade_head

    upgrade_head()
    typer.echo("database is at head")


@cli.command()
def worker(burst: bool = typer.Option(False, help="Stop once the queue is empty.")) -> None:
    """Run the background worker (arq) that sends the emails queued in Redis."""
    import logging.config

    from arq.logs import default_log_config

    from app.core.config import get_settings
    from app.worker import make_worker

    settings = get_settings()
    if not settings.redis_url:
        typer.echo("REDIS_URL is unset: without Redis the API sends emails itself.", err=True)
        raise typer.Exit(2)
    log_config = default_log_config(verbose=settings.log_level == "DEBUG")
    log_config["loggers"]["app"] = {"handlers": ["arq.standard"], "level": settings.log_level}
    logging.config.dictConfig(log_config)
    make_worker(settings, burst=burst).run()
