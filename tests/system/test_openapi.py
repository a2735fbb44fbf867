"""/openapi.json is generated from the decoding types: what it allows, the server accepts."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import SEED, HttpClient
from tests.helpers import purchase as a_purchase


async def fetch_document(client: HttpClient) -> dict[str, object]:
    reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    document: dict[str, object] = reply.json()
    return document


def request_validator(document: dict[str, object]) -> jsonschema.Draft202012Validator:
    schema = {
        "$ref": "#/components/schemas/PurchaseRequest",
        "components": document["components"],
    }
    return jsonschema.Draft202012Validator(schema)


async def test_document_is_openapi_3_1_and_describes_purchase(client: HttpClient) -> None:
    document = await fetch_document(client)
    assert document["openapi"] == "3.1.0"
    post = document["paths"]["/purchase"]["post"]  # type: ignore[index]
    assert set(post["responses"]) >= {"200", "400", "409", "413", "415", "422", "503"}


async def test_seed_example_validates_against_the_document(client: HttpClient) -> None:
    validator = request_validator(await fetch_document(client))
    validator.validate(json.loads((SEED / "ExampleRequest.json").read_text()))


async def test_documented_constraints_reject_what_the_server_rejects(client: HttpClient) -> None:
    validator = request_validator(await fetch_document(client))
    bad = json.loads((SEED / "ExampleRequest.json").read_text())
    bad["customer_info"]["ammount"] = "20000"
    assert not validator.is_valid(bad)
    reply = await client.post("/purchase", json=bad)
    assert reply.status_code == 422


async def test_purchases_valid_under_the_document_are_accepted(client: HttpClient) -> None:
    """Generate purchases from the published schema itself and post them."""
    document = await fetch_document(client)
    validator = request_validator(document)
    examples: list[dict[str, object]] = []

    text = st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=40
    )
    account = st.from_regex(r"\A[A-Za-z0-9-]{1,64}\Z")

    @settings(
        max_examples=150,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        tx=text,
        buyer=text,
        seller=text,
        debit=account,
        credit=account,
        amount=st.integers(min_value=1, max_value=10**15),
    )
    def collect(tx: str, buyer: str, seller: str, debit: str, credit: str, amount: int) -> None:
        if debit == credit:
            return  # the one constraint JSON Schema cannot state; the server answers 422
        purchase = {
            "transaction_id": tx,
            "customer_info": {"customer_name": buyer, "customer_account": debit, "ammount": amount},
            "seller_info": {"seller_name": seller, "seller_account": credit},
        }
        validator.validate(purchase)
        examples.append(purchase)

    collect()
    seen: set[str] = set()
    for purchase in examples:
        reply = await client.post("/purchase", json=purchase)
        tx = purchase["transaction_id"]
        if tx in seen:
            assert reply.status_code in (200, 409), reply.text  # a generated repeat of an id
        else:
            assert reply.status_code == 200, (purchase, reply.text)
        seen.add(tx)  # type: ignore[arg-type]


def parameter_schema(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    parameters = document["paths"][path]["get"]["parameters"]
    schema: dict[str, Any] = next(p["schema"] for p in parameters if p["name"] == name)
    return schema


async def test_every_cursor_the_document_allows_is_answered_and_others_are_422(
    client: HttpClient,
) -> None:
    """The cursor's pattern is exactly what the server takes: any string it matches names a
    position in the history (200), any other string is a 422."""
    document = await fetch_document(client)
    schema = parameter_schema(document, "/accounts/{account}/transactions", "cursor")
    validator = jsonschema.Draft202012Validator(schema)
    allowed = generated_strings(st.from_regex(schema["pattern"]), 60)
    others = generated_strings(st.text(max_size=40), 60)
    for cursor in allowed + others:
        reply = await client.get(f"/accounts/alice/transactions?cursor={quote(cursor, safe='')}")
        expected = 200 if validator.is_valid(cursor) else 422
        assert reply.status_code == expected, (cursor, reply.text)


async def test_the_batch_schema_says_what_the_server_does_with_each_item(
    client: HttpClient,
) -> None:
    """Items are any JSON values, each answered on its own: the document must not promise a
    rejection the server does not make."""
    document = await fetch_document(client)
    body = document["paths"]["/purchases"]["post"]["requestBody"]
    schema = {**body["content"]["application/json"]["schema"], "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    unknown_field = {**a_purchase(), "surprise": 42}
    for batch in ([a_purchase(), unknown_field], [[1, 2], "x", None]):
        assert validator.is_valid(batch)
        reply = await client.post("/purchases", json=batch)
        assert reply.status_code == 200
    assert not validator.is_valid([])
    assert not validator.is_valid({"not": "an array"})


def generated_strings(strategy: st.SearchStrategy[str], count: int) -> list[str]:
    out: list[str] = []

    @settings(
        max_examples=count, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def collect(value: str) -> None:
        out.append(value)

    collect()
    return out
