"""Leader election: the lease truth table on SQLite and on a real PostgreSQL, and races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.interfaces.leader import LeaseElector, default_holder
from bot.store.db import Store
from bot.store.models import Lease
from tests.conftest import sqlalchemy_url

TTL = timedelta(seconds=60)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bot.db'}"
    return sqlalchemy_url(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.upgrade()
    yield s
    s.dispose()


def elector(store: Store, holder: str, clock: FakeClock) -> LeaseElector:
    return LeaseElector(store, holder=holder, ttl=TTL, clock=clock)


def lease_row(store: Store) -> Lease | None:
    with store.session() as session:
        return session.get(Lease, "scheduler")


def test_fresh_acquire_inserts_the_lease(store: Store, clock: FakeClock) -> None:
    a = elector(store, "a", clock)
    assert a.try_acquire() is True
    assert a.is_leader
    row = lease_row(store)
    assert row is not None and row.holder == "a"
    assert a.current() == ("a", clock.now() + TTL)


def test_holder_renews_and_keeps_acquired_at(store: Store, clock: FakeClock) -> None:
    a = elector(store, "a", clock)
    assert a.try_acquire()
    first = lease_row(store)
    clock.advance(seconds=30)
    assert a.try_acquire() is True
    clock.advance(seconds=20)
    assert a.renew() is True
    row = lease_row(store)
    assert first is not None and row is not None
    assert a.current() == ("a", clock.now() + TTL)
    assert row.acquired_at == first.acquired_at  # renewal is not a new term


def test_other_holder_is_blocked_while_the_lease_is_live(store: Store, clock: FakeClock) -> None:
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire()
    clock.advance(seconds=59)
    assert b.try_acquire() is False
    assert not b.is_leader
    assert b.renew() is False  # b never held it
    assert b.release() is False  # and cannot release someone else's lease
    assert a.current() is not None and a.current()[0] == "a"  # type: ignore[index]


def test_takeover_after_expiry_then_old_holder_cannot_renew(store: Store, clock: FakeClock) -> None:
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire()
    clock.advance(seconds=61)
    assert not a.is_leader  # its local view expires too
    assert b.try_acquire() is True
    row = lease_row(store)
    assert row is not None and row.holder == "b"
    assert a.renew() is False
    assert a.try_acquire() is False
    assert b.current() == ("b", clock.now() + TTL)


def test_release_lets_the_other_take_over_at_once(store: Store, clock: FakeClock) -> None:
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire()
    assert a.release() is True
    assert not a.is_leader
    assert lease_row(store) is None
    assert b.current() is None
    assert b.try_acquire() is True
    assert a.try_acquire() is False


def test_exact_expiry_instant_is_still_held(store: Store, clock: FakeClock) -> None:
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire()
    clock.advance(seconds=60)  # expires_at == now: not yet "expired_at < now"
    assert b.try_acquire() is False
    clock.advance(seconds=0.001)
    assert b.try_acquire() is True


def test_default_holder_prefers_the_configured_instance_id() -> None:
    assert default_holder("bot-1") == "bot-1"
    assert default_holder(None) != default_holder(None)  # random part: unique per process
    assert len(default_holder("x" * 500)) == 128


@pytest.mark.parametrize("expired_first", [False, True])
def test_concurrent_acquire_has_exactly_one_winner(
    store_url: str, clock: FakeClock, expired_first: bool
) -> None:
    """Eight replicas, each with its own Store (own connection pool), race for the lease:
    for a fresh insert (IntegrityError path) and for taking over an expired lease
    (compare-and-set UPDATE path)."""
    stores = [Store(store_url) for _ in range(8)]
    stores[0].upgrade()
    try:
        if expired_first:
            assert elector(stores[0], "old", clock).try_acquire()
            clock.advance(seconds=120)
        electors = [elector(s, f"r{i}", clock) for i, s in enumerate(stores)]
        barrier = threading.Barrier(len(electors))
        results: dict[str, bool] = {}
        errors: list[BaseException] = []

        def race(e: LeaseElector) -> None:
            try:
                barrier.wait()
                results[e.holder] = e.try_acquire()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(e,)) for e in electors]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        winners = [h for h, won in results.items() if won]
        assert len(winners) == 1
        row = lease_row(stores[0])
        assert row is not None and row.holder == winners[0]
    finally:
        for s in stores:
            s.dispose()


def test_a_replica_racing_itself_for_the_first_lease_still_leads(
    store: Store, clock: FakeClock
) -> None:
    """The lease job and the first steps of one replica start together: both find no row,
    one inserts it, the other's INSERT conflicts. That one must still see itself leader."""
    twin = elector(store, "a", clock)

    class Racing(LeaseElector):
        def _insert(self, now, expires):  # type: ignore[no-untyped-def]
            assert twin.try_acquire()  # the other thread of the same replica wins the row
            return super()._insert(now, expires)

    racing = Racing(store, holder="a", ttl=TTL, clock=clock)
    assert racing.try_acquire() is True
    assert racing.is_leader and twin.is_leader
    other = elector(store, "b", clock)
    assert other.try_acquire() is False
