"""Admission control over HTTP, on a real Serve app with tight bounds: clients that trickle
their bodies are cut off (408) or refused (503) and do not hold up the others; one client over
its share gets 429 while others are served. Every refusal is problem JSON with the headers
it promises (Retry-After; Connection: close where the body was left unread)."""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import select
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from serve.local import wait_healthy
from tests.serve.conftest import TINY
from tests.serve.test_app import assert_problem, post_multipart

pytestmark = pytest.mark.integration

KEYS = tuple(f"guard-key-{i}-5e0c9a" for i in range(6))
BODY_TIMEOUT_S = 2.0
SLOW_UPLOAD_S = 0.4
MAX_SLOW_UPLOADS = 2
MAX_IN_FLIGHT = 4
MAX_PER_CLIENT = 2
RETRY_AFTER_S = 3


@dataclass(frozen=True)
class Guarded:
    url: str
    port: int
    path: str
    """/guarded/v1/assessments"""

    def client(self, key: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def guarded(service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """A second app on the same Serve: four assessments in flight, two per client, two slow
    uploads, bodies due within 2 s; Ray's own limit (8) is reached only when more than eight
    clients hold connections at once."""
    from serve.app import build_app

    keys_file = tmp_path_factory.mktemp("guard-secret") / "api-keys"
    keys_file.write_text("\n".join(KEYS) + "\n")
    args = {
        "scoring": {"model": TINY, "batch_size": 4},
        "api_keys_file": str(keys_file),
        "batch_wait_timeout_s": 0.05,
        "scorer_max_ongoing_requests": 8,
        "ingress_num_cpus": 0.1,
        "scorer_num_cpus": 1,
        "body_timeout_s": BODY_TIMEOUT_S,
        "slow_upload_s": SLOW_UPLOAD_S,
        "max_slow_uploads": MAX_SLOW_UPLOADS,
        "max_in_flight_requests": MAX_IN_FLIGHT,
        "max_in_flight_per_client": MAX_PER_CLIENT,
        "ingress_max_ongoing_requests": 2 * MAX_IN_FLIGHT,
        "retry_after_s": RETRY_AFTER_S,
    }
    service.serve.run(build_app(args), name="guarded", route_prefix="/guarded", blocking=False)
    base = httpx.URL(service.url)
    url = f"{base.scheme}://{base.host}:{base.port}/guarded"
    try:
        wait_healthy(url)
        yield Guarded(url=url, port=base.port, path="/guarded/v1/assessments")
    finally:
        service.serve.delete("guarded")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def trickle(target: Guarded, key: str, *, give_up_s: float = 8.0) -> Answer:
    """Declare a 100 kB JSON body and send it one byte every 0.1 s until the server answers
    (or ``give_up_s`` passes: then the read fails and so does the test)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", target.port), timeout=give_up_s) as sock:
        sock.sendall(
            f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
        )
        while time.monotonic() - started < give_up_s:
            if select.select([sock], [], [], 0.1)[0]:
                break  # the answer is coming
            try:
                sock.sendall(b" ")
            except OSError:
                break
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, headers, body, time.monotonic() - started)


def assert_problem_answer(answer: Answer, status: int, reason: str) -> None:
    """:func:`assert_problem` for a raw-socket answer."""
    response = httpx.Response(answer.status, headers=answer.headers, content=answer.body)
    assert_problem(response, status, reason)


def test_slow_uploads_are_cut_off_and_do_not_hold_up_others(guarded, samples) -> None:
    """Ten clients trickle bodies: more than Ray's own limit (8), which used to leave every
    other request waiting behind them. Now four are admitted, the rest refused at once; of
    the four, two keep a slow-upload place until the 2 s body timeout (408), two are refused
    once they turn out slow (503). A normal client sent meanwhile is scored at once."""
    slow_keys = [KEYS[i // 2] for i in range(10)]  # five clients, two uploads each
    with cf.ThreadPoolExecutor(len(slow_keys)) as pool:
        slow = [pool.submit(trickle, guarded, key) for key in slow_keys]
        time.sleep(SLOW_UPLOAD_S + 0.4)  # the slow uploads are sorted out by now
        started = time.monotonic()
        with guarded.client(KEYS[5]) as client:
            normal = post_multipart(client, samples[0])
        normal_s = time.monotonic() - started
        answers = [future.result() for future in slow]
    assert normal.status_code == 200, normal.text
    assert normal_s < 10, normal_s
    assert Counter(a.status for a in answers) == {408: MAX_SLOW_UPLOADS, 503: 8}, answers
    for answer in answers:
        if answer.status == 408:
            assert_problem_answer(answer, 408, "request.timeout")
            assert BODY_TIMEOUT_S <= answer.seconds < BODY_TIMEOUT_S + 2, answer.seconds
        else:
            assert_problem_answer(answer, 503, "server.overloaded")
            assert answer.headers["retry-after"] == str(RETRY_AFTER_S)
            assert answer.seconds < BODY_TIMEOUT_S, answer.seconds  # never held to the end
        assert answer.headers["connection"] == "close"  # the rest of the body is not read


def test_a_client_over_its_share_gets_429_while_others_are_served(guarded, samples) -> None:
    """Two slow uploads hold the first key's whole share: its next request is refused at
    once with 429, another key's is scored."""
    with cf.ThreadPoolExecutor(2) as pool:
        holding = [pool.submit(trickle, guarded, KEYS[0]) for _ in range(MAX_PER_CLIENT)]
        time.sleep(SLOW_UPLOAD_S / 2)  # admitted, still uploading
        with guarded.client(KEYS[0]) as client:
            refused = post_multipart(client, samples[0])
        with guarded.client(KEYS[1]) as client:
            served = post_multipart(client, samples[0])
        held = [future.result() for future in holding]
    assert_problem(refused, 429, "client.rate_limited")
    assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
    assert refused.headers["connection"] == "close"
    assert served.status_code == 200, served.text
    assert [a.status for a in held] == [408] * MAX_PER_CLIENT


def test_a_burst_from_one_key_gets_429s_another_key_200(guarded, samples) -> None:
    """Twelve simultaneous requests from one key and one from another: the first key gets at
    most its share scored at a time and 429 for the rest, the other key is scored; nothing
    else (no 503: the replica never fills with one client's share)."""
    burst = 12

    def call(key: str) -> httpx.Response:
        with guarded.client(key) as client:
            return post_multipart(client, samples[1])

    with cf.ThreadPoolExecutor(burst + 1) as pool:
        mine = [pool.submit(call, KEYS[0]) for _ in range(burst)]
        other = pool.submit(call, KEYS[1])
        responses = [future.result() for future in mine]
        other_response = other.result()
    counts = Counter(r.status_code for r in responses)
    print(f"burst of {burst} from one key: {dict(counts)}; other key: {other_response.status_code}")
    assert other_response.status_code == 200, other_response.text
    assert set(counts) <= {200, 429} and counts[429] > 0 and counts[200] > 0, counts
    for response in responses:
        if response.status_code == 429:
            assert_problem(response, 429, "client.rate_limited")
            assert response.headers["retry-after"] == str(RETRY_AFTER_S)
