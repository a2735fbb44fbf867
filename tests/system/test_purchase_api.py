"""POST /purchase on the wire: the seed's contract, and a clear 4xx for every bad input."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from core.constants import STREAM
from core.entries import decode
from core.events import Leg
from tests.helpers import SEED, Gateway, HttpClient, HttpReply, purchase


async def test_seed_example_round_trip_returns_the_seed_response(
    client: HttpClient, redis: Redis
) -> None:
    body = (SEED / "ExampleRequest.json").read_bytes()
    response = await client.post(
        "/purchase", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads((SEED / "ExampleResponse.json").read_text())
    entry_id = response.headers["x-stream-entry-id"]
    assert response.headers["x-request-id"]
    entries = await redis.xrange(STREAM, entry_id, entry_id)
    assert len(entries) == 1


async def test_one_stream_entry_holds_the_purchase_one_field_per_value(
    client: HttpClient, redis: Redis
) -> None:
    response = await client.post("/purchase", json=purchase("legs-1", amount=777))
    assert response.status_code == 200
    [(_, fields)] = await redis.xrange(STREAM)
    assert fields[b"v"] == b"2"
    assert fields[b"transaction_id"] == b"legs-1"
    assert fields[b"amount"] == b"777"
    assert fields[b"request_id"] == response.headers["x-request-id"].encode()
    event = decode(fields)
    assert event.legs == (
        Leg("23131342342342321", "DEBIT", 777),
        Leg("23132131", "CREDIT", 777),
    )


async def test_client_request_id_is_echoed(client: HttpClient) -> None:
    response = await client.post(
        "/purchase", json=purchase(), headers={"x-request-id": "client-abc-123"}
    )
    assert response.headers["x-request-id"] == "client-abc-123"


async def test_missing_content_type_is_accepted_as_json(client: HttpClient) -> None:
    """The seed's gin service bound JSON whatever the header said; old clients keep working."""
    body = json.dumps(purchase()).encode()
    response = await client.post("/purchase", content=body)
    assert "content-type" not in response.request_headers
    assert response.status_code == 200


def assert_error(response: HttpReply, status: int, code: str, path: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert isinstance(body["details"], list)
    if path is not None:
        assert [d["path"] for d in body["details"]] == [path], body


async def test_malformed_json_is_400(client: HttpClient) -> None:
    response = await client.post(
        "/purchase", content=b'{"transaction_id": ', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "malformed_json")


async def test_invalid_utf8_is_400(client: HttpClient) -> None:
    response = await client.post(
        "/purchase",
        content=b'{"transaction_id": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p["customer_info"].update(ammount="20000"), "$.customer_info.ammount"),
        (lambda p: p["customer_info"].update(ammount=20000.5), "$.customer_info.ammount"),
        (lambda p: p["customer_info"].update(ammount=0), "$.customer_info.ammount"),
        (lambda p: p["customer_info"].update(ammount=10**15 + 1), "$.customer_info.ammount"),
        (lambda p: p["customer_info"].pop("ammount"), "$.customer_info"),
        (lambda p: p.update(transaction_id=""), "$.transaction_id"),
        (lambda p: p.update(transaction_id="x" * 65), "$.transaction_id"),
        (lambda p: p["customer_info"].update(customer_name=""), "$.customer_info.customer_name"),
        (
            lambda p: p["customer_info"].update(customer_name="a\u0000b"),
            "$.customer_info.customer_name",
        ),
        (lambda p: p.update(transaction_id="tx\n1"), "$.transaction_id"),
        (lambda p: p["seller_info"].update(seller_name="n" * 201), "$.seller_info.seller_name"),
        (lambda p: p["seller_info"].update(seller_account="12 34"), "$.seller_info.seller_account"),
        (
            lambda p: p["seller_info"].update(seller_account="a" * 65),
            "$.seller_info.seller_account",
        ),
        (
            lambda p: p["seller_info"].update(seller_account=23132131),
            "$.seller_info.seller_account",
        ),
        (lambda p: p["seller_info"].update(extra=1), "$.seller_info"),
        (lambda p: p.pop("seller_info"), "$"),
        (
            lambda p: p["seller_info"].update(seller_account="23131342342342321"),
            "$.seller_info.seller_account",
        ),
    ],
    ids=[
        "amount-as-string",
        "amount-fractional",
        "amount-zero",
        "amount-too-large",
        "amount-missing",
        "id-empty",
        "id-too-long",
        "name-empty",
        "name-with-nul",
        "id-with-newline",
        "name-too-long",
        "account-bad-chars",
        "account-too-long",
        "account-not-a-string",
        "unknown-field",
        "seller-missing",
        "same-account-both-sides",
    ],
)
async def test_schema_violation_is_422_naming_the_field(
    client: HttpClient, redis: Redis, mutate: object, path: str
) -> None:
    body = purchase()
    mutate(body)  # type: ignore[operator]
    response = await client.post("/purchase", json=body)
    assert_error(response, 422, "validation_error", path)
    assert await redis.xlen(STREAM) == 0


async def test_non_object_json_is_422(client: HttpClient) -> None:
    response = await client.post("/purchase", json=[1, 2])
    assert_error(response, 422, "validation_error", "$")


async def test_non_json_content_type_is_415(client: HttpClient) -> None:
    response = await client.post(
        "/purchase", content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_error(response, 415, "unsupported_media_type")


async def test_body_over_limit_announced_in_content_length_is_413(
    client: HttpClient,
) -> None:
    body = b'{"transaction_id": "' + b"x" * 70_000 + b'"}'
    response = await client.post(
        "/purchase", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


async def test_chunked_body_over_limit_is_413_before_the_body_ends(gateway: Gateway) -> None:
    """No Content-Length, and the body never ends: the limit is enforced while reading,
    so the 413 comes back after the first 128 KiB without the client finishing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"POST /purchase HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(2):
        writer.write(b"10000\r\n" + b" " * 0x10000 + b"\r\n")
    await writer.drain()  # ...and no terminating zero-length chunk
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
    body = json.loads(await reader.readexactly(int(headers["content-length"])))
    writer.close()
    assert status_line == "HTTP/1.1 413 Payload Too Large"
    assert body["error"] == "payload_too_large"


async def test_unknown_path_is_404(client: HttpClient) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")


async def test_wrong_method_is_405_with_allow(client: HttpClient) -> None:
    response = await client.get("/purchase")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_server_keeps_serving_after_bad_input(client: HttpClient) -> None:
    for bad in (b"{", b"\x00\x01", b"[]", b'{"a":' * 5000, b"null"):
        response = await client.post(
            "/purchase", content=bad, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500
    assert (await client.post("/purchase", json=purchase())).status_code == 200


async def test_healthz_and_readyz(client: HttpClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "ok"
