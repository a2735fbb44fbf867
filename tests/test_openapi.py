"""/openapi.json is generated from the decoding types: what it allows, the server accepts."""

from __future__ import annotations

import json

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import SEED, HttpClient


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
