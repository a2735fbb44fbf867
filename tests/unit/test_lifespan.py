"""The app's lifespan, called in-process through the ASGI interface itself: services are
built whole at startup, a bad configuration fails the startup with its reason, and a Redis
that is down does not (the gateway answers 503 until it is back)."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.processes import free_port
from gateway.app import App
from gateway.http.asgi import Message
from tests.helpers import purchase


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """Startup configures the process' logging, here pytest's own: put it back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Lifespan:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self._incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive(self) -> Message:
        return self._incoming.pop(0)

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def call(app: App, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_a_bad_setting_fails_the_startup_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONOKERA_RETRY_AFTER_S", "soon")
    app = App()
    lifespan = Lifespan()
    await app({"type": "lifespan"}, lifespan.receive, lifespan.send)
    assert [m["type"] for m in lifespan.sent] == ["lifespan.startup.failed"]
    assert "MONOKERA_RETRY_AFTER_S" in lifespan.sent[0]["message"]
    assert app.services is None
    status, body = await call(app, "GET", "/healthz")
    assert (status, body["error"]) == (404, "not_found")  # no route without its services


async def test_the_gateway_starts_with_redis_down_and_answers_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("MONOKERA_REDIS_TIMEOUT_S", "0.5")
    monkeypatch.setenv("MONOKERA_CONSOLE", "false")
    app = App()
    await app.startup()  # what lifespan.startup runs; it does not raise
    assert app.services is not None
    status, body = await call(app, "POST", "/purchase", json.dumps(purchase()).encode())
    assert (status, body["error"]) == (503, "store_unavailable"), body
    status, body = await call(app, "GET", "/readyz")
    assert (status, body["status"]) == (503, "unavailable")
    status, _ = await call(app, "GET", "/console/api/overview")
    assert status == 404
    await app.shutdown()


@pytest.fixture
def gc_thresholds() -> Iterator[None]:
    """Startup tunes the process' collector, here pytest's own: put it back after."""
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


async def test_startup_freezes_its_objects_and_raises_the_collection_threshold(
    monkeypatch: pytest.MonkeyPatch, gc_thresholds: None
) -> None:
    """A few container objects per request made Python's default (700) collect every ~40
    purchases, ~8 µs of CPU each purchase; startup's own objects never become garbage."""
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("MONOKERA_REDIS_TIMEOUT_S", "0.5")
    monkeypatch.setenv("MONOKERA_GC_THRESHOLD", "12345")
    gc.unfreeze()
    app = App()
    await app.startup()
    assert gc.get_threshold()[0] == 12345
    assert gc.get_freeze_count() > 0
    await app.shutdown()
