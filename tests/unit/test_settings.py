"""One settings object from the environment: parsed from text, a bad variable named."""

from __future__ import annotations

import pytest

from core.settings import Settings, SettingsError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.port, settings.max_body_bytes, settings.redis_appendfsync) == (
        8000,
        65536,
        "everysec",
    )


def test_values_are_parsed_from_text() -> None:
    settings = Settings.from_env(
        {"MONOKERA_PORT": "9000", "MONOKERA_ACCESS_LOG": "true", "MONOKERA_CACHE_TTL_S": "60"}
    )
    assert (settings.port, settings.access_log, settings.cache_ttl_s) == (9000, True, 60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MONOKERA_PORT", "eighty"),
        ("MONOKERA_PORT", "70000"),
        ("MONOKERA_BATCH_SIZE", "0"),
        ("MONOKERA_LOG_LEVEL", "LOUD"),
        ("MONOKERA_REDIS_APPENDFSYNC", "sometimes"),
        ("MONOKERA_LEDGER_RETENTION_DAYS", "-1"),
        ("MONOKERA_LEDGER_PARTITIONS_AHEAD_DAYS", "week"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("DATABASE_URL", "mysql://db/monokera"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_every_setting_round_trips_through_the_environment() -> None:
    settings = Settings.from_env({"MONOKERA_CONSUMER": "f-1", "MONOKERA_ACK_REPLICAS": "2"})
    assert Settings.from_env(settings.as_env()) == settings


SECRET = "r3dis-S3CRET-pw"


def test_a_bad_url_is_reported_without_its_password() -> None:
    try:
        Settings.from_env({"REDIS_URL": f"http://user:{SECRET}@host/0"})
    except ValueError as exc:
        assert "REDIS_URL" in str(exc)
        assert SECRET not in str(exc)
    else:
        raise AssertionError("a bad REDIS_URL was accepted")
