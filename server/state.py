"""What `create_app`'s lifespan assembles and the routes use: one object on app.state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.publisher import Publisher
from server.rate_limits import RateLimits
from server.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    publisher: Publisher
    rate_limits: RateLimits
