"""docker-compose.yml and the Dockerfile, checked by reading them: no Docker engine runs here,
so this is what stands in for `docker compose up` (docs/deploy-docker.md says what is not
checked). Roles come from each service's command, not its name."""

from __future__ import annotations

import re
import shlex
from functools import cache
from typing import Any

import yaml

from devstack.redis_server import DEFAULT_REDIS_VERSION
from tests.helpers import ROOT

SERVICES = {
    "redis",
    "postgres",
    "migrate",
    "gateway",
    "flusher",
    "lb",
    "gateway-scaled",
    "flusher-1",
    "flusher-2",
    "postgres-scaled",
    "migrate-scaled",
    *(f"redis-node-{n}" for n in range(1, 7)),
    "redis-cluster-init",
    "prometheus",
    "grafana",
}
BUILT = {
    "migrate",
    "gateway",
    "flusher",
    "gateway-scaled",
    "flusher-1",
    "flusher-2",
    "migrate-scaled",
}
"""The services that run this repository's image; every other one runs a published image."""


@cache
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def with_command(module: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services().items()
        if service.get("command") == ["python", "-m", module]
    }


def dockerfile() -> list[str]:
    """The Dockerfile's instructions in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_the_services_and_what_they_run() -> None:
    assert set(services()) == SERVICES
    for name, service in services().items():
        if name in BUILT:
            assert service.get("build") == "." and "image" not in service, name
        else:
            image = service.get("image", "")
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (
                name,
                image,
            )
    assert set(with_command("gateway")) == {"gateway", "gateway-scaled"}
    assert set(with_command("flusher")) == {"flusher", "flusher-1", "flusher-2"}
    assert set(with_command("core.migrate")) == {"migrate", "migrate-scaled"}


def test_redis_is_the_version_the_suite_runs() -> None:
    redis = {
        n: s["image"] for n, s in services().items() if s.get("image", "").startswith("redis:")
    }
    assert len(redis) == 8  # the simple stack's, six cluster nodes, the cluster's init job
    assert set(redis.values()) == {f"redis:{DEFAULT_REDIS_VERSION}"}


def test_flushers_do_not_inherit_the_gateway_http_healthcheck() -> None:
    for name, flusher in with_command("flusher").items():
        check = flusher.get("healthcheck")
        assert check is not None, f"{name} would inherit the image's GET /healthz check"
        if check.get("disable"):
            continue
        assert check["test"] == ["CMD", "python", "-m", "core.heartbeat"], name
        folder = flusher["environment"]["MONOKERA_HEARTBEAT_DIR"]
        assert f"install -d -o monokera {folder}" in " ".join(dockerfile()), name


def test_gateways_and_flushers_wait_for_their_migration() -> None:
    migrations = with_command("core.migrate")
    for name, service in {**with_command("gateway"), **with_command("flusher")}.items():
        waits_for = [
            dep
            for dep, how in service["depends_on"].items()
            if dep in migrations and how == {"condition": "service_completed_successfully"}
        ]
        assert len(waits_for) == 1, name
        migrate = migrations[waits_for[0]]
        assert migrate["environment"]["DATABASE_URL"] == service["environment"]["DATABASE_URL"]
        assert migrate.get("profiles") == service.get("profiles"), name
    for name, migrate in migrations.items():
        assert migrate["restart"] == "no", name
        ((database, how),) = migrate["depends_on"].items()
        assert services()[database]["image"].startswith("postgres:"), name
        assert how == {"condition": "service_healthy"}, name


def test_every_healthcheck_has_a_start_period() -> None:
    checks = {n: s["healthcheck"] for n, s in services().items() if "healthcheck" in s}
    assert checks
    for name, check in checks.items():
        assert check.get("disable") or check.get("start_period"), name
    (image_check,) = [line for line in dockerfile() if line.startswith("HEALTHCHECK")]
    assert "--start-period=" in image_check


def test_dockerfile_installs_the_lock_before_copying_the_code() -> None:
    lines = dockerfile()
    assert lines[0].split()[1].split("@")[0] == "python:3.12-slim"
    copies = [
        (i, shlex.split(line)[1:-1]) for i, line in enumerate(lines) if line.startswith("COPY")
    ]
    first_code = next(
        i for i, sources in copies if not all(s.startswith("requirements/") for s in sources)
    )
    (lock,) = [i for i, line in enumerate(lines) if "--require-hashes -r requirements/" in line]
    assert lock < first_code
    lock_file = re.search(r"-r (requirements/\S+)", lines[lock])
    assert lock_file is not None and "--hash=sha256:" in (ROOT / lock_file[1]).read_text()
    (project,) = [line for line in lines[first_code:] if re.search(r"pip install .* \.$", line)]
    assert "--no-deps" in project


def test_the_image_leaves_devstack_out() -> None:
    sources = [
        s for line in dockerfile() if line.startswith("COPY") for s in shlex.split(line)[1:-1]
    ]
    assert sources and not any(s.rstrip("/").split("/")[0] == "devstack" for s in sources)
    assert not any(s in (".", "./") for s in sources)
