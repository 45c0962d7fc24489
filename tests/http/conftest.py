"""The HTTP surface under test: the real Starlette app over a real store.

``http_world`` builds :class:`HttpParts` the way ``serve`` does (``build_service``), on
the parametrized store (a SQLite file and a fresh PostgreSQL database), with the
FakeClock; ``client`` is Starlette's TestClient driving that app in-process. Sibling
surfaces (Slack interactivity, the console) reuse ``http_world`` and ``client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select
from starlette.testclient import TestClient

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.http.app import create_app
from bot.interfaces.http.server import Service, build_service
from bot.interfaces.scheduler import SchedulerConfig
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import WebhookDelivery
from bot.testing.sentry_webhooks import FakeWebhookSender
from tests.conftest import sqlalchemy_url

CLIENT_SECRET = "test-client-secret-" + "s" * 24


@dataclass
class HttpWorld:
    service: Service
    clock: FakeClock
    sender: FakeWebhookSender

    @property
    def app(self) -> App:
        return self.service.app

    def deliveries(self) -> list[WebhookDelivery]:
        with self.app.store.session() as session:
            rows = session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all()
            for row in rows:
                session.expunge(row)
            return list(rows)


def scheduler_config() -> SchedulerConfig:
    return SchedulerConfig(
        intervals={"poll": 60, "lifecycle": 300, "fixlinks": 900, "outbox": 15},
        lease_ttl=timedelta(seconds=60),
    )


def make_world(app: App, clock: FakeClock) -> HttpWorld:
    service = build_service(app, config=scheduler_config())
    return HttpWorld(service, clock, FakeWebhookSender(CLIENT_SECRET))


@pytest.fixture
def http_world(store_url_for_http: str, clock: FakeClock, tmp_path: Path) -> Iterator[HttpWorld]:
    settings = load_settings(
        environ={
            "BOT_DATABASE_URL": store_url_for_http,
            "SENTRY_CLIENT_SECRET": CLIENT_SECRET,
            "BOT_PLAYBOOKS_DIR": str(tmp_path),
        }
    )
    db = Store(settings.database_url)
    db.upgrade()
    app = App(settings=settings, store=db, clock=clock)
    try:
        yield make_world(app, clock)
    finally:
        db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url_for_http(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The bot's store: a fresh SQLite file, or a fresh real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return sqlalchemy_url(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def client(http_world: HttpWorld) -> Iterator[TestClient]:
    with TestClient(create_app(http_world.service.parts)) as c:
        yield c


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by Prometheus' own text parser: {(sample, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out
