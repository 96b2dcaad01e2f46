"""`create_app(settings)`: the FastAPI application, its dependencies assembled in `lifespan`
(engine, migrations to head, the MQTT bridge when a broker is configured)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from server.access_log import AccessLog
from server.api_models import ERROR_RESPONSES
from server.body_limit import BodyLimit
from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import (
    DB_RETRY_AFTER_S,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    ServiceError,
    TooLargeError,
    TooManyRequestsError,
    database_unavailable,
)
from server.input_bounds import invalid_request
from server.leadership import Leadership, leadership_for
from server.mqtt_bridge import MqttBridge, Refusal
from server.online_signing import OnlineRoleRenewer
from server.publisher import NoPublisher, Publisher
from server.rate_limits import AuthFailureLimit, RateLimits
from server.routes import (
    admin,
    api_docs,
    devices,
    health,
    identity,
    metrics,
    rollouts,
    testers,
    tokens,
    tuf,
)
from server.scheduler import RolloutScheduler
from server.services.releases import current_notices
from server.services.reports import ingest_report_batch
from server.services.target_links import TargetLinks, target_links
from server.settings import Settings
from server.state import AppState
from server.web.routes import install_dashboard
from server.workers import HealthSource
from wire import AvailabilityNotice, StatusReport

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    InvalidInputError: 422,
    NotAuthenticatedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    GoneError: 410,
    TooLargeError: 413,
    TooManyRequestsError: 429,
}


def create_app(settings: Settings) -> FastAPI:
    """The application; ValueError (one line) for settings that cannot work."""
    rate_limits = RateLimits(settings.rate_limits)
    links = target_links(
        store_url=settings.targets_store,
        public_url=settings.targets_public_url,
        ttl_s=settings.targets_url_ttl_s,
        s3_endpoint_url=settings.s3_endpoint_url,
    )
    app = FastAPI(
        title="Orange Friday",
        lifespan=partial(_lifespan, settings=settings, rate_limits=rate_limits, links=links),
        responses=ERROR_RESPONSES,  # every refusal any route may answer, documented
        # FastAPI's pages load swagger-ui/redoc from a CDN: ours is self-contained
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthFailureLimit, limits=rate_limits)
    app.add_middleware(AccessLog, routes=app.router.routes)  # outermost: logs all refusals
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    for module in (
        tuf,
        devices,
        identity,
        rollouts,
        admin,
        tokens,
        testers,
        health,
        metrics,
        api_docs,
    ):
        app.include_router(module.router)
    install_dashboard(app, settings)
    return app


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    """The one place a service's refusal becomes an HTTP status; the message is the detail."""
    status = next((s for kind, s in STATUS_BY_ERROR.items() if isinstance(exc, kind)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, TooManyRequestsError):
        headers = exc.headers()
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database away for a moment: 503 with Retry-After and one line, no traceback. The
    request's session was rolled back (each request writes in one transaction), so nothing is
    half written; the pool reconnects (pre-ping) once the database is back. Any other database
    error is a bug: re-raised, a 500."""
    if not database_unavailable(exc):
        raise exc
    first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[:1]
    log.warning(
        "database unavailable (%s %s answered 503): %s",
        request.method,
        request.url.path,
        first_line[0] if first_line else type(exc).__name__,
    )
    detail = f"the database is unavailable for the moment; retry in {DB_RETRY_AFTER_S} s"
    return JSONResponse(
        {"detail": detail},
        status_code=503,
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


@asynccontextmanager
async def _lifespan(
    app: FastAPI, *, settings: Settings, rate_limits: RateLimits, links: TargetLinks | None
) -> AsyncIterator[None]:
    engine = make_engine(settings.db_url)
    try:
        await asyncio.to_thread(upgrade_to_head, engine)
        sessions = make_sessions(engine)
        async with _publisher(settings, sessions) as publisher:
            app.state.ota = state = AppState(
                settings, engine, sessions, publisher, rate_limits, target_links=links
            )
            leadership = leadership_for(settings.db_url)  # once-only work: the leader's
            scheduler = RolloutScheduler(
                sessions,
                publisher,
                settings.train,
                interval_s=settings.rollout_tick_s,
                leadership=leadership,
            )
            scheduler.start()
            renewer = _online_renewer(settings, leadership)
            if renewer is not None:
                renewer.start()
            workers = (scheduler, renewer, publisher)
            state.workers = [w for w in workers if isinstance(w, HealthSource)]
            try:
                yield
            finally:
                await asyncio.to_thread(scheduler.stop)
                if renewer is not None:
                    await asyncio.to_thread(renewer.stop)
                await asyncio.to_thread(leadership.close)  # another replica leads at once
    finally:
        engine.dispose()


def _online_renewer(settings: Settings, leadership: Leadership) -> OnlineRoleRenewer | None:
    if settings.online_keys_dir is None or settings.repo_dir is None:
        return None
    return OnlineRoleRenewer.for_repo(
        settings.repo_dir,
        settings.online_keys_dir,
        interval_s=settings.online_renew_s,
        leadership=leadership,
    )


@asynccontextmanager
async def _publisher(
    settings: Settings, sessions: sessionmaker[Session]
) -> AsyncIterator[Publisher]:
    """The MQTT bridge, started and stopped around the app, or nothing (HTTP only)."""
    if not settings.broker_url:
        yield NoPublisher()
        return
    bridge = _bridge(settings.broker_url, settings, sessions)
    if not await asyncio.to_thread(bridge.start, settings.mqtt_connect_wait_s):
        log.warning("no MQTT broker at %s yet; still trying in the background", settings.broker_url)
    try:
        yield bridge
    finally:
        await asyncio.to_thread(bridge.stop)


def _bridge(broker_url: str, settings: Settings, sessions: sessionmaker[Session]) -> MqttBridge:
    return MqttBridge(
        broker_url,
        on_reports=partial(ingest_mqtt_reports, sessions),
        client_id=settings.mqtt_client_id,
        share_group=settings.mqtt_share_group,
        current_notices=partial(_current_notices, sessions),
        ca_file=str(settings.broker_ca) if settings.broker_ca else None,
    )


def ingest_mqtt_reports(
    sessions: sessionmaker[Session], reports: Sequence[StatusReport]
) -> list[Refusal]:
    """Reports heard over MQTT, stored as HTTP's are, a whole batch in one transaction.

    A database failure raises (the bridge retries, then leaves the batch to HTTP: the devices
    keep reports in their outboxes until an HTTP answer acknowledges them, so nothing is
    lost; docs/decisions/0002)."""
    with sessions() as session:
        outcome = ingest_report_batch(session, reports, via="mqtt")
        session.commit()
    return [Refusal(report, error) for report, error in outcome.refused]


def _current_notices(sessions: sessionmaker[Session]) -> list[AvailabilityNotice]:
    try:
        with sessions() as session:
            return current_notices(session)
    except SQLAlchemyError:
        log.exception("could not read the current notices to re-publish")
        return []
