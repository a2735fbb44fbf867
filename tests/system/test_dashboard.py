"""The Grafana dashboard queries only metrics a running gateway exposes: it cannot drift."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from flusher.worker import Flusher
from tests.helpers import ROOT, HttpClient, purchase

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "monokera.json"
# A metric name in PromQL: not a function (followed by "("), not inside {...} or by (...).
_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def metric_names(expr: str) -> set[str]:
    """Names of series an expression selects: labels, grouping and ranges stripped."""
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r'"[^"]*"', "", bare)
    return {
        name
        for name in _NAME.findall(bare)
        if name not in _KEYWORDS and not re.fullmatch(r"[0-9.e]+", name)
    }


def exposed(metrics_text: str) -> set[str]:
    """Every series name in the exposition (histograms as their _bucket, _sum, _count)."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in metrics_text.splitlines()
        if line and not line.startswith("#")
    }


def test_names_are_extracted_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(monokera_purchase_ack_seconds_bucket{le!=""}'
        "[$__rate_interval]))) / sum(max by (consumer) (monokera_flusher_batches_total))"
    )
    assert metric_names(expr) == {
        "monokera_purchase_ack_seconds_bucket",
        "monokera_flusher_batches_total",
    }


async def test_every_metric_the_dashboard_queries_is_in_metrics(
    client: HttpClient, flusher: Flusher
) -> None:
    for i in range(3):
        await client.post("/purchase", json=purchase(f"dash-{i}"))
    await client.post("/purchase", json=purchase("dash-0"))
    await client.get("/transactions/dash-0")  # a read: cache and PostgreSQL counters
    await flusher.drain()
    await flusher.publish_stats()  # the flusher figures every gateway's /metrics carries
    available = exposed((await client.get("/metrics")).text)

    dashboard = json.loads(DASHBOARD.read_text())
    queried: dict[str, set[str]] = {}
    for expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        for name in names:
            queried.setdefault(name, set()).add(expr)
    missing = {name: exprs for name, exprs in queried.items() if name not in available}
    assert not missing, f"the dashboard queries metrics /metrics does not expose: {missing}"
    assert len(queried) >= 10
