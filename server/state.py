"""What `create_app`'s lifespan assembles and the routes use: one object on app.state."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.publisher import Publisher
from server.rate_limits import RateLimits
from server.services.target_links import TargetLinks
from server.settings import Settings
from server.workers import HealthSource


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    publisher: Publisher
    rate_limits: RateLimits
    workers: list[HealthSource] = field(default_factory=list)  # on GET /health
    target_links: TargetLinks | None = None  # images from an object store (redirects)
