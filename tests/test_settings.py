"""Configuration: defaults, TOML file, environment, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import SettingsError, load_settings

DEV = {"ENGINE_ENV": "dev"}
PROD_KEYS = {
    "ENGINE_ENV": "prod",
    "ENGINE_PII_KEYS": "1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "ENGINE_PII_INDEX_KEY": "aW5kZXgta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU=",
}


def test_defaults_are_the_local_stack() -> None:
    settings = load_settings(DEV)
    assert [s.name for s in settings.shards] == ["shard_0", "shard_1", "shard_2", "shard_3"]
    assert settings.http.port == 8080
    assert settings.redis.url == "redis://127.0.0.1:56379/0"
    assert settings.shard_map().physical_for(4095).name == "shard_3"


def test_toml_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(
        """
env = "prod"
control_dsn = "postgresql://app@db-control/control"
shards = [{name = "a", dsn = "postgresql://app@db-a/a"}, {name = "b", dsn = "postgresql://app@db-b/b"}]
shard_ranges = [{first = 0, last = 99, shard = "a"}, {first = 100, last = 4095, shard = "b"}]
[http]
port = 9000
workers = 8
[pool]
size_max = 50
[crypto]
pii_keys = {"1" = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "2" = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="}
pii_index_key = "aW5kZXgta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
""",
        "utf-8",
    )
    settings = load_settings({"ENGINE_CONFIG": str(config), "ENGINE_HTTP_PORT": "9100"})
    assert settings.env == "prod"
    assert settings.http.port == 9100  # the environment wins over the file
    assert settings.http.workers == 8
    assert settings.pool.size_max == 50
    assert settings.shard_map().physical_for(99).name == "a"
    assert settings.shard_map().physical_for(100).name == "b"
    assert settings.crypto.pii_key_version == 2  # the newest key encrypts


def test_prod_refuses_to_run_on_dev_keys() -> None:
    with pytest.raises(SettingsError, match="pii_keys"):
        load_settings({"ENGINE_ENV": "prod"})


def test_shard_dsns_from_environment() -> None:
    settings = load_settings(DEV | {"ENGINE_SHARD_DSNS": "x=postgresql://h/x, y=postgresql://h/y"})
    assert [(s.name, s.dsn) for s in settings.shards] == [
        ("x", "postgresql://h/x"),
        ("y", "postgresql://h/y"),
    ]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ENGINE_SHARD_DSNS": "nodsn"}, "not name=dsn"),
        ({"ENGINE_ENV": "staging"}, "invalid configuration"),
        ({"ENGINE_WORKERS": "0"}, "workers"),
        ({"ENGINE_BOOKING_BATCH_MAX": "0"}, "booking_batch_max"),
        ({"ENGINE_BOOKING_GATHER_S": "1"}, "booking_gather_s"),
        ({"ENGINE_EOD_DEDUCT_IN_FLIGHT_MAX": "0"}, "deduct_in_flight_max"),
        ({"ENGINE_EOD_REMIND_CHUNK": "0"}, "chunk sizes"),
        ({"ENGINE_EOD_ACCRUAL_CHUNK": "20001"}, "chunk sizes"),
        ({"ENGINE_INLINE_DEBIT_IN_FLIGHT": "65"}, "inline_debit_in_flight"),
    ],
)
def test_bad_configuration_is_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(DEV | environ)


def test_group_booking_is_set_from_the_environment() -> None:
    settings = load_settings(
        DEV | {"ENGINE_BOOKING_BATCH_MAX": "1", "ENGINE_BOOKING_GATHER_S": "0"}
    )
    assert (settings.http.booking_batch_max, settings.http.booking_gather_s) == (1, 0.0)
    defaults = load_settings(DEV).http
    assert (defaults.booking_batch_max, defaults.booking_gather_s) == (32, 0.005)


def test_the_auto_debits_in_flight_are_set_from_the_environment() -> None:
    assert load_settings(DEV).eod.deduct_in_flight_max == 100
    settings = load_settings(DEV | {"ENGINE_EOD_DEDUCT_IN_FLIGHT_MAX": "7"})
    assert settings.eod.deduct_in_flight_max == 7


def test_the_day_end_chunks_are_set_from_the_environment() -> None:
    defaults = load_settings(DEV).eod
    assert (defaults.accrual_chunk, defaults.deduct_chunk, defaults.remind_chunk) == (
        2000,
        100,
        1000,
    )
    settings = load_settings(
        DEV
        | {
            "ENGINE_EOD_ACCRUAL_CHUNK": "200",
            "ENGINE_EOD_OVERDUE_CHUNK": "20",
            "ENGINE_EOD_DEDUCT_CHUNK": "10",
            "ENGINE_EOD_REMIND_CHUNK": "50",
            "ENGINE_EOD_PRUNE_CHUNK": "500",
        }
    ).eod
    chunks = (
        settings.accrual_chunk,
        settings.overdue_chunk,
        settings.deduct_chunk,
        settings.remind_chunk,
        settings.prune_chunk,
    )
    assert chunks == (200, 20, 10, 50, 500)


def test_the_relay_claim_is_set_from_the_environment() -> None:
    assert load_settings(DEV).external.relay_batch_max == 50
    assert load_settings(DEV | {"ENGINE_RELAY_BATCH_MAX": "200"}).external.relay_batch_max == 200
    with pytest.raises(SettingsError, match="relay_batch_max"):
        load_settings(DEV | {"ENGINE_RELAY_BATCH_MAX": "0"})


def test_the_relay_idle_back_off_is_set_from_the_environment() -> None:
    external = load_settings(DEV).external
    assert (external.relay_idle_poll_s, external.relay_idle_poll_max_s) == (0.1, None)  # none
    slower = load_settings(DEV | {"ENGINE_RELAY_IDLE_POLL_S": "2"}).external  # no maximum set
    assert (slower.relay_idle_poll_s, slower.relay_idle_poll_max_s) == (2.0, None)
    batch = {"ENGINE_RELAY_IDLE_POLL_MAX_S": "1"}  # what make up gives the batch relay
    assert load_settings(DEV | batch).external.relay_idle_poll_max_s == 1.0
    for wrong in ({"ENGINE_RELAY_IDLE_POLL_MAX_S": "0.05"}, {"ENGINE_RELAY_IDLE_POLL_S": "0"}):
        with pytest.raises(SettingsError, match="relay_idle_poll"):
            load_settings(DEV | wrong)


def test_the_inline_debits_sharing_core_calls_is_set_from_the_environment() -> None:
    assert load_settings(DEV).external.inline_debit_in_flight == 4
    settings = load_settings(DEV | {"ENGINE_INLINE_DEBIT_IN_FLIGHT": "0"})
    assert settings.external.inline_debit_in_flight == 0  # each debit its own call


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text("[http]\nprot = 1\n", "utf-8")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(DEV | {"ENGINE_CONFIG": str(config)})


def test_overlapping_ranges_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(
        'shard_ranges = [{first = 0, last = 4095, shard = "shard_0"},'
        ' {first = 1, last = 1, shard = "shard_1"}]\n',
        "utf-8",
    )
    with pytest.raises(SettingsError, match="twice"):
        load_settings(DEV | {"ENGINE_CONFIG": str(config)})


def test_an_unset_environment_is_production() -> None:
    """A host started without ENGINE_ENV must not run on the published dev keys."""
    with pytest.raises(SettingsError, match="pii_keys"):
        load_settings({})
    assert load_settings(PROD_KEYS).env == "prod"
    # and no demo operator token is filled in
    assert load_settings(PROD_KEYS).origination.operator_token_sha256 == []


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        # the published dev keys, given explicitly, in any base64 spelling
        ({"ENGINE_PII_KEYS": "1:ZGV2LW9ubHktcGlpLWtleS12MS0wMTIzNDU2Nzg5YWI="}, "published"),
        ({"ENGINE_PII_INDEX_KEY": " ZGV2LW9ubHktaW5kZXgta2V5LTAxMjM0NTY3ODlhYmM= "}, "published"),
        # plain HTTP on a public interface, with no TLS proxy declared
        ({"ENGINE_HTTP_HOST": "0.0.0.0"}, "needs TLS"),
    ],
)
def test_prod_refuses_published_secrets_and_plain_http(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(PROD_KEYS | environ)


def test_prod_refuses_the_demo_operator_token(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    sha = "9437e87fae95c03d3778f2575bb18ce30e647e51d86a8c37963364e1fc4f374e"
    config.write_text(f'[origination]\noperator_token_sha256 = ["{sha}"]\n', "utf-8")
    with pytest.raises(SettingsError, match="demo operator token"):
        load_settings(PROD_KEYS | {"ENGINE_CONFIG": str(config)})


def test_prod_off_loopback_with_tls_or_a_proxy() -> None:
    public = PROD_KEYS | {"ENGINE_HTTP_HOST": "0.0.0.0"}
    assert load_settings(public | {"ENGINE_BEHIND_TLS_PROXY": "1"}).http.behind_tls_proxy
    tls = {"ENGINE_TLS_CERT_FILE": "/etc/engine/cert.pem", "ENGINE_TLS_KEY_FILE": "/k.pem"}
    assert load_settings(public | tls).http.tls_cert_file == "/etc/engine/cert.pem"
    with pytest.raises(SettingsError, match="go together"):
        load_settings(DEV | {"ENGINE_TLS_CERT_FILE": "/etc/engine/cert.pem"})
    with pytest.raises(SettingsError, match="ops_port"):
        load_settings(DEV | {"ENGINE_HTTP_PORT": "9000", "ENGINE_OPS_PORT": "9000"})
