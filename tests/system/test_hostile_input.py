"""Hostile and malformed requests: a 4xx JSON error every time, never a 5xx, and the
gateway keeps serving everyone else meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Gateway, HttpClient, HttpReply, purchase

JSON_HEADERS = {"content-type": "application/json"}


def assert_client_error(reply: HttpReply) -> None:
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    body = reply.json()
    assert set(body) == {"error", "message", "details"}
    assert body["message"]


def generated(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    out: list[bytes] = []

    @settings(
        max_examples=count, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def collect(value: bytes) -> None:
        out.append(value)

    collect()
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


# Inputs past the interpreter's own limits: nesting deeper than the recursion limit, integer
# literals longer than int()'s 4,300 digits. Hypothesis reaches the bounds of these ranges
# early, so the deep and the long ones are always among the examples. Bodies stay under
# the 64 KiB limit: a 413 is answered before the body is read, and the client may see a reset.
nested = st.builds(
    lambda depth, brackets: brackets[0] * depth + brackets[1] * depth,
    st.integers(min_value=1, max_value=7_000),
    st.sampled_from([(b"[", b"]"), (b'{"a":[', b"]}")]),
)
long_numbers = st.builds(
    lambda digits, tail: b"9" * digits + tail,
    st.integers(min_value=1, max_value=10_000),
    st.sampled_from([b"", b".0", b".5", b"e2", b"0" * 5000, b".0e-400"]),
)
hostile_json = st.one_of(nested, long_numbers)


def purchase_with(raw_value: bytes) -> bytes:
    """The seed's purchase with the amount's value replaced by raw JSON text."""
    return json.dumps(purchase()).replace("20000", "AMOUNT").encode().replace(b"AMOUNT", raw_value)


def mangled_purchases() -> st.SearchStrategy[bytes]:
    """The seed's purchase with one field replaced by any JSON value."""
    fields = [
        ("transaction_id",),
        ("customer_info",),
        ("customer_info", "customer_name"),
        ("customer_info", "customer_account"),
        ("customer_info", "ammount"),
        ("seller_info", "seller_account"),
    ]

    def build(path: tuple[str, ...], value: object) -> bytes:
        body = purchase()
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return json.dumps(body).encode()

    return st.builds(build, st.sampled_from(fields), json_values)


async def test_arbitrary_bytes_and_json_get_4xx_never_5xx(client: HttpClient) -> None:
    bodies = generated(st.binary(max_size=300), 150)
    bodies += generated(json_values.map(lambda v: json.dumps(v).encode()), 150)
    for body in bodies:
        reply = await client.post("/purchase", content=body, headers=JSON_HEADERS)
        assert_client_error(reply)


async def test_hostile_bodies_to_both_purchase_endpoints_get_4xx_never_5xx(
    client: HttpClient,
) -> None:
    """Deep nesting and endless numbers as the body, as a field, and as a batch item."""
    roots = generated(hostile_json, 60)
    fields = [purchase_with(value) for value in generated(hostile_json, 60)]
    for body in roots + generated(st.binary(max_size=300), 40):
        assert_client_error(await client.post("/purchase", content=body, headers=JSON_HEADERS))
    for body in fields:  # a short integral amount is a valid purchase
        assert_answered(await client.post("/purchase", content=body, headers=JSON_HEADERS))
    for body in roots + fields:
        assert_answered(await client.post("/purchases", content=body, headers=JSON_HEADERS))
        batch = b"[" + json.dumps(purchase()).encode() + b"," + body + b"]"
        assert_answered(await client.post("/purchases", content=batch, headers=JSON_HEADERS))


RESULT_KEYS = ({"error", "message", "details"}, {"transaction_id", "customer_info", "seller_info"})


def assert_answered(reply: HttpReply) -> None:
    """A 4xx JSON error, or a 200 with a purchase or, from a batch, a result per item."""
    if reply.status_code != 200:
        assert_client_error(reply)
        return
    body = reply.json()
    for item in body if isinstance(body, list) else [body]:
        assert set(item) in RESULT_KEYS


query_values = st.one_of(
    st.text(max_size=30),
    long_numbers.map(bytes.decode),
    st.integers(min_value=0, max_value=6_000).map(lambda n: "0" * n + "5"),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


async def test_every_query_and_path_parameter_gets_200_or_a_4xx_never_5xx(
    client: HttpClient,
) -> None:
    values = generated(query_values.map(str.encode), 80)
    for value in values:
        text = quote(value, safe="")
        for path in (
            f"/accounts/alice/transactions?limit={text}",
            f"/accounts/alice/transactions?cursor={text}",
            f"/accounts/alice/transactions?limit={text}&cursor={text}&limit=1",
            f"/accounts/{text}/transactions",
            f"/accounts/{text}",
            f"/transactions/{text}",
        ):
            reply = await client.get(path)
            if reply.status_code != 200:
                assert_client_error(reply)


async def test_purchases_with_one_field_mangled_are_accepted_or_get_a_4xx(
    client: HttpClient,
) -> None:
    for body in generated(mangled_purchases(), 300):
        reply = await client.post("/purchase", content=body, headers=JSON_HEADERS)
        if reply.status_code != 200:
            assert_client_error(reply)


async def test_deeply_nested_json_is_rejected_cleanly(client: HttpClient) -> None:
    deep_field = b'{"transaction_id": ' + b"[" * 60_000 + b"]" * 60_000 + b"}"
    deep_root = b"[" * 30_000 + b"]" * 30_000
    for body in (deep_field[:65_000], deep_root):
        assert_client_error(await client.post("/purchase", content=body, headers=JSON_HEADERS))


async def test_numbers_out_of_range_and_non_json_literals(client: HttpClient) -> None:
    template = json.dumps(purchase()).replace("20000", "AMOUNT")
    for literal in (
        "1e400",
        "-1",
        "18446744073709551616",
        "1000000000000001",
        "1000000000000001.0",
        "20000.5",
        "999999999999999.99",  # a float would round it to the integer 10**15
        "20000.0000000000000001",  # a float would round it to 20000
        "2e-400",
        "1" + "0" * 5000 + ".0",
    ):
        reply = await client.post(
            "/purchase", content=template.replace("AMOUNT", literal).encode(), headers=JSON_HEADERS
        )
        assert reply.status_code == 422, literal
        assert reply.json()["details"][0]["path"] == "$.customer_info.ammount"
    for literal in ("NaN", "Infinity", "-Infinity"):
        reply = await client.post(
            "/purchase", content=template.replace("AMOUNT", literal).encode(), headers=JSON_HEADERS
        )
        assert reply.status_code == 400, literal


async def test_an_integral_amount_written_with_a_fraction_or_exponent_is_that_integer(
    client: HttpClient,
) -> None:
    """JSON Schema calls 981.0 an integer, and the published schema says integer: accept it
    as 981, and a retry written 981 is the same purchase."""
    body = purchase(amount=981)
    for literal in ("981.0", "9.81e2", "98100e-2", "981.000"):
        text = json.dumps(body).replace('"ammount": 981', f'"ammount": {literal}')
        reply = await client.post("/purchase", content=text.encode(), headers=JSON_HEADERS)
        assert reply.status_code == 200, (literal, reply.text)
        assert reply.json()["customer_info"]["debit_ammount"] == 981
    replay = await client.post("/purchase", json=body)
    assert (replay.status_code, replay.headers.get("idempotent-replayed")) == (200, "true")
    batch = json.dumps([purchase(amount=7)]).replace('"ammount": 7', '"ammount": 7.0').encode()
    reply = await client.post("/purchases", content=batch, headers=JSON_HEADERS)
    assert reply.json()[0]["customer_info"]["debit_ammount"] == 7


async def test_duplicate_keys_take_the_last_value_as_the_seed_service_did(
    client: HttpClient,
) -> None:
    """Go's encoding/json (the seed's gin service) and msgspec both keep the last value."""
    body = json.dumps(purchase("first-value"))
    body = body.replace(
        '"transaction_id": "first-value"',
        '"transaction_id": "first-value", "transaction_id": "last-value"',
    )
    reply = await client.post("/purchase", content=body.encode(), headers=JSON_HEADERS)
    assert reply.status_code == 200
    assert reply.json()["transaction_id"] == "last-value"


async def test_header_flood_is_refused_and_the_gateway_keeps_serving(
    gateway: Gateway, client: HttpClient
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    flood = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 100) for i in range(5000))
    writer.write(b"POST /purchase HTTP/1.1\r\nHost: t\r\n" + flood + b"\r\n")
    try:
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
    except ConnectionError:
        status = b""  # refused by closing the connection: also fine
    finally:
        writer.close()
    assert not status.startswith(b"HTTP/1.1 5")
    assert (await client.post("/purchase", json=purchase())).status_code == 200


async def test_slow_and_stalled_clients_do_not_hold_up_the_others(
    gateway: Gateway, client: HttpClient
) -> None:
    stalled = []
    for i in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        if i % 2:
            writer.write(b"POST /purchase HTTP/1.1\r\nHost: t\r\nContent-Ty")  # headers stall
        else:
            writer.write(  # a chunked body that never ends
                b"POST /purchase HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"tra\r\n'
            )
        await writer.drain()
        stalled.append(writer)
    try:
        started = time.monotonic()
        replies = await asyncio.gather(
            *(client.post("/purchase", json=purchase()) for _ in range(200))
        )
        assert {r.status_code for r in replies} == {200}
        assert time.monotonic() - started < 10
    finally:
        for writer in stalled:
            writer.close()


async def test_no_traceback_reached_the_gateway_log(gateway: Gateway, client: HttpClient) -> None:
    await client.post("/purchase", content=b"\xff{", headers=JSON_HEADERS)
    await asyncio.sleep(0.3)  # the log writer thread
    assert "Traceback" not in gateway.output()
    assert '"level":"ERROR"' not in gateway.output()


async def test_path_parameters_that_could_not_be_stored_are_404_or_422_not_500(
    client: HttpClient,
) -> None:
    from tests.helpers import raw_cursor

    assert (await client.get("/transactions/%00")).status_code == 404
    assert (await client.get("/transactions/" + "x" * 65)).status_code == 404
    huge = await client.get(f"/accounts/alice/transactions?cursor={raw_cursor(f'k1.{10**19}')}")
    assert huge.status_code == 422
    for limit in ("+5", "1_0", "\u0665"):
        assert (await client.get(f"/accounts/alice/transactions?limit={limit}")).status_code == 422


async def test_a_trailing_newline_is_not_a_valid_id_account_or_name(client: HttpClient) -> None:
    for path, value in (
        (("transaction_id",), "tx-1\n"),
        (("customer_info", "customer_account"), "alice\n"),
        (("seller_info", "seller_name"), "Shop\n"),
    ):
        body = purchase()
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        reply = await client.post("/purchase", json=body)
        assert reply.status_code == 422, path
