"""The operator's and the pull agent's bucket (cnctl.store.Store) over real HTTP on loopback: a call that gets a
429/5xx answer or none at all is made again after a pause, at most three times; a refusal, a missing bucket or a
connection nobody takes is said at once, naming the bucket.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from cnctl.store import PAUSES, Store, StoreProblem
from tests.unit.http_server import http_server

NOT_THERE = {  # what each store answers for an object that is not there
    "gcs": (404, "application/json", b'{"error": {"code": 404, "message": "No such object"}}'),
    "s3": (404, "application/xml", b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>"),
}
FAILURES = {
    503: (503, "application/json", b'{"error": {"code": 503, "message": "Service Unavailable"}}'),
    429: (429, "application/json", b'{"error": {"code": 429, "message": "Too Many Requests"}}'),
    403: (403, "application/json", b'{"error": {"code": 403, "message": "Forbidden"}}'),
}


def answering(answers: list[tuple[int, str, bytes]], seen: list[str]) -> type[http.server.BaseHTTPRequestHandler]:
    """A store that answers the requests for an object with `answers` in turn, then the last one for ever; records
    each request's method and path."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            status, kind, body = answers[max(min(len(attempts(seen)), len(answers)), 1) - 1]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def attempts(seen: list[str]) -> list[str]:
    """The requests for the object (GCS's client looks at the bucket after a failure, to name what is wrong)."""
    return [request for request in seen if not request.startswith("GET /storage/v1/b/cn-models?")]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AbstractContextManager[tuple[Store, list[float]]]]:
    """A Store of `kind` against a server giving `answers`; yields it and the pauses it took (never slept)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    @contextlib.contextmanager
    def make(kind: str, answers: list[tuple[int, str, bytes]], seen: list[str]) -> Iterator[tuple[Store, list[float]]]:
        with http_server(answering(answers, seen)) as url:
            made = Store(kind, "cn-models", "models", endpoint=url, project="p", field="storage.buckets.models")
            pauses: list[float] = []
            made.sleep = pauses.append
            yield made, pauses

    return make


@pytest.mark.parametrize("kind", ["gcs", "s3"])
@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_store_is_asked_again_after_a_pause_and_its_answer_used(store: Callable[..., AbstractContextManager[
        tuple[Store, list[float]]]], kind: str, status: int) -> None:
    seen: list[str] = []
    with store(kind, [FAILURES[status], FAILURES[status], NOT_THERE[kind]], seen) as (made, pauses):
        assert made.read("bundles/dev/channels/canary.json") is None
    assert len(attempts(seen)) == 3 and pauses == list(PAUSES)


@pytest.mark.parametrize("kind", ["gcs", "s3"])
def test_a_store_busy_on_every_attempt_fails_after_three_naming_the_bucket(store: Callable[..., AbstractContextManager[
        tuple[Store, list[float]]]], kind: str) -> None:
    seen: list[str] = []
    with store(kind, [FAILURES[503]], seen) as (made, pauses), pytest.raises(StoreProblem) as problem:
        made.stat("bundles/dev/v1/manifest.json")
    assert len(attempts(seen)) == len(PAUSES) + 1 and pauses == list(PAUSES)
    assert str(problem.value).startswith("storage.buckets.models: ") and "503" in str(problem.value)


@pytest.mark.parametrize("kind", ["gcs", "s3"])
def test_a_refusal_is_said_at_once(store: Callable[..., AbstractContextManager[tuple[Store, list[float]]]],
                                   kind: str) -> None:
    seen: list[str] = []
    with store(kind, [FAILURES[403]], seen) as (made, pauses), pytest.raises(StoreProblem):
        made.create("bundles/dev/channels/canary.json", b"{}", conditional=False)
    assert len(attempts(seen)) == 1 and pauses == []


def test_a_connection_closed_unanswered_is_tried_again_and_one_nobody_takes_is_not() -> None:
    """A store that takes the connection and drops it without an answer (overloaded, restarting) may answer the
    next one: transient. A closed port refuses: the endpoint is wrong or nothing serves it, said at once."""
    with socket.socket() as dropping, socket.socket() as closed:
        dropping.bind(("127.0.0.1", 0))
        dropping.listen(8)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        stop = threading.Event()

        def drop_each() -> None:
            dropping.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    conn, _ = dropping.accept()
                    conn.recv(65536)
                    conn.close()

        dropper = threading.Thread(target=drop_each, daemon=True)
        dropper.start()
        try:
            for address, attempts in ((closed.getsockname(), 1), (dropping.getsockname(), len(PAUSES) + 1)):
                made = Store("gcs", "cn-models", "models", endpoint=f"http://{address[0]}:{address[1]}", project="p")
                pauses: list[float] = []
                made.sleep = pauses.append
                with pytest.raises(StoreProblem, match="unreachable"):
                    made.read("bundles/dev/channels/canary.json")
                assert len(pauses) == attempts - 1, address
        finally:
            stop.set()
            dropper.join(5)
