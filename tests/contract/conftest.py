"""Stoplight Prism as a validating proxy in front of the project's fakes.

``prism proxy SPEC UPSTREAM --errors`` forwards each request to the fake, validates the
request and the response against the vendor's OpenAPI description, and answers a
violation with an RFC 7807 problem (422 for a bad request, 500 for a bad response)
instead of the fake's answer. Prism also logs every violation; each test checks the
log too, so a warning-level violation cannot pass silently.

Prism takes many seconds to start on a loaded machine, so one proxy per vendor is
started per session. The fake behind it is swapped per test through :class:`Upstream`
(one loopback server whose handler is replaced), so tests never share state.

Prism and GitHub's description come from npm (tests/contract/node/, installed by
``scripts/test.sh``). Without them the tests skip and say why; under CI (``CI=true``)
that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.testing.loopback import serve_handler
from tests.contract.specs import NODE_DIR, github_subset, sentry_subset

PRISM = NODE_DIR / "node_modules" / ".bin" / "prism"
START_DEADLINE = 300.0  # generous: 2 shared cores, a 13 MB description for GitHub


def require_node_tools() -> None:
    """Skip (fail under CI) when Node or the npm packages are missing."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node is not installed")
    if not PRISM.exists():
        missing.append(f"{PRISM} is missing (scripts/test.sh runs npm ci in {NODE_DIR})")
    if missing:
        message = "Prism contract tests cannot run: " + "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Responder = Callable[[httpx.Request, Callable[[float], None]], httpx.Response]


class Upstream:
    """One loopback server whose answers come from whatever fake is plugged in now."""

    def __init__(self) -> None:
        self.respond: Responder | None = None

    def __call__(self, request: httpx.Request, sleep: Callable[[float], None]) -> httpx.Response:
        if self.respond is None:
            return httpx.Response(503, json={"detail": "no fake plugged in"})
        return self.respond(request, sleep)


@dataclass
class Prism:
    """A running ``prism proxy``; ``url`` is where clients should send requests."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    upstream: Upstream
    _offset: int = field(default=0)

    def mark(self) -> None:
        """Start a new section of the log (violations are counted from here)."""
        self._offset = self.log_path.stat().st_size

    def log_since_mark(self) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(self._offset)
            return handle.read().decode("utf-8", "replace")

    def violations(self) -> list[str]:
        """Log lines since :meth:`mark` that report a request or response violation.

        Prism writes its log asynchronously: a sentinel request is sent first and the
        log is read up to the sentinel's line, so no earlier line can still be on its way.
        """
        token = uuid.uuid4().hex
        httpx.get(f"{self.url}/__log_sentinel__/{token}", timeout=60)
        deadline = time.monotonic() + 60
        while token not in (text := self.log_since_mark()):
            assert time.monotonic() < deadline, "prism never logged the sentinel request"
            time.sleep(0.1)
        before = text[: text.index(token)].rsplit("\n", 1)[0]
        return [
            line
            for line in before.splitlines()
            if "Violation" in line or "✖" in line or "errors#" in line
        ]


def start_prism(spec: dict[str, Any], workdir: Path, name: str) -> Iterator[Prism]:
    """Serve an :class:`Upstream` on loopback and put Prism in front of it."""
    require_node_tools()
    spec_path = workdir / f"{name}.openapi.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log_path = workdir / f"{name}.prism.log"
    upstream = Upstream()
    with serve_handler(upstream) as upstream_url:
        args = ["proxy", str(spec_path), upstream_url, "--errors"]
        for process, url in _run_prism(args, log_path):
            yield Prism(url, log_path, process, upstream)


def start_prism_mock(spec: dict[str, Any], workdir: Path, name: str) -> Iterator[Prism]:
    """``prism mock``: answers generated from the description alone, no fake behind it.

    Prism validates each request and answers from the operation's examples (or, without
    one, from its schema); ``Prefer: code=404`` picks another documented response.
    """
    require_node_tools()
    spec_path = workdir / f"{name}.mock.openapi.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log_path = workdir / f"{name}.prism-mock.log"
    for process, url in _run_prism(["mock", str(spec_path), "--errors"], log_path):
        yield Prism(url, log_path, process, Upstream())


def _run_prism(args: list[str], log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``prism ARGS`` on a free loopback port, wait until it listens, stop it after."""
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PRISM), *args, "-h", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=NODE_DIR,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while "Prism is listening" not in log_path.read_text("utf-8", "replace"):
            if process.poll() is not None:
                pytest.fail(f"prism exited: {log_path.read_text('utf-8', 'replace')[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"prism did not start within {START_DEADLINE:g} s")
            time.sleep(0.2)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def forward_to(
    http: httpx.Client,
    base_url: str,
    after: Callable[[httpx.Request, httpx.Response], httpx.Response],
) -> Responder:
    """An :class:`Upstream` responder passing Prism's request on to ``base_url``.

    ``after`` sees each exchange and returns the response Prism gets (it may edit it).
    """

    def forward(request: httpx.Request, _sleep: Callable[[float], None]) -> httpx.Response:
        skip = ("host", "content-length", "accept-encoding", "connection")
        answer = http.request(
            request.method,
            base_url + request.url.raw_path.decode(),
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in skip],
            content=request.content,
        )
        drop = ("content-length", "transfer-encoding", "connection", "content-encoding")
        response = httpx.Response(
            answer.status_code,
            headers=[(k, v) for k, v in answer.headers.items() if k.lower() not in drop],
            content=answer.content,
            request=request,
        )
        return after(request, response)

    return forward


@pytest.fixture(scope="session")
def github_spec() -> dict[str, object]:
    """GitHub's description cut to the operations the code host uses."""
    require_node_tools()
    return github_subset()


@pytest.fixture(scope="session")
def github_prism(
    github_spec: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prism]:
    """One Prism proxy for GitHub per session (it takes many seconds to start)."""
    yield from start_prism(dict(github_spec), tmp_path_factory.mktemp("prism-gh"), "github")


@pytest.fixture(scope="session")
def sentry_prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    """One validating proxy per session, Sentry's description; plug a fake in per test."""
    spec, removed = sentry_subset()
    assert removed == 45  # the null-in-enum places of the bot's operations
    yield from start_prism(spec, tmp_path_factory.mktemp("prism-sentry"), "sentry")


@pytest.fixture(scope="session")
def sentry_prism_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    """One ``prism mock`` of Sentry's description per session."""
    spec, _removed = sentry_subset()
    yield from start_prism_mock(spec, tmp_path_factory.mktemp("prism-sentry-mock"), "sentry")
