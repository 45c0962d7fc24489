"""Process-local metrics: bounded endpoint labels, the counting transport, the poll timer."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.adapters.counting_transport import CountingTransport
from bot.adapters.prometheus import Telemetry, endpoint_template


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api/0/organizations/acme/issues/", "organizations/{org}/issues"),
        (
            "/api/0/organizations/acme/issues/4611686018427388042/",
            "organizations/{org}/issues/{id}",
        ),
        (
            "/api/0/organizations/acme/issues/123/events/latest/",
            "organizations/{org}/issues/{id}/events/latest",
        ),
        (
            "/api/0/organizations/acme/issues/123/events/705cf87300cc566d928d68a582d4a7ca/",
            "organizations/{org}/issues/{id}/events/{id}",
        ),
        ("/api/0/organizations/other-org/events/", "organizations/{org}/events"),
        ("/api/0/projects/acme/backend/", "projects/{org}/backend"),
        ("/", "/"),
    ],
)
def test_endpoint_templates_carry_no_ids(path: str, template: str) -> None:
    assert endpoint_template(path) == template


def samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(telemetry.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_counting_transport_counts_each_exchange_by_template_and_status() -> None:
    telemetry = Telemetry()
    answers = iter([429, 200, 404])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={})

    transport = CountingTransport(telemetry.sentry_request, httpx.MockTransport(handler))
    with httpx.Client(transport=transport, base_url="https://sentry.example") as http:
        http.get("/api/0/organizations/acme/issues/1/")
        http.get("/api/0/organizations/acme/issues/2/")
        http.get("/api/0/organizations/acme/issues/3/")
    got = samples(telemetry)
    issue = "organizations/{org}/issues/{id}"
    assert got[("sentry_requests_total", (("endpoint", issue), ("status", "429")))] == 1
    assert got[("sentry_requests_total", (("endpoint", issue), ("status", "200")))] == 1
    assert got[("sentry_requests_total", (("endpoint", issue), ("status", "404")))] == 1


def test_counting_transport_counts_transport_errors() -> None:
    telemetry = Telemetry()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = CountingTransport(telemetry.sentry_request, httpx.MockTransport(handler))
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ConnectError):
        http.get("https://sentry.example/api/0/organizations/acme/issues/")
    key = (
        "sentry_requests_total",
        (("endpoint", "organizations/{org}/issues"), ("status", "error")),
    )
    assert samples(telemetry)[key] == 1


def test_the_poll_timer_observes_failures_too_and_the_leader_gauge_is_live() -> None:
    telemetry = Telemetry()
    leading = [False]
    telemetry.track_leader(lambda: leading[0])

    def failing() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        telemetry.timed_poll(failing)()
    assert telemetry.timed_poll(lambda: "ok")() == "ok"
    got = samples(telemetry)
    assert got[("cycle_duration_seconds_count", ())] == 2
    assert got[("leader_is_leader", ())] == 0
    leading[0] = True
    assert samples(telemetry)[("leader_is_leader", ())] == 1
