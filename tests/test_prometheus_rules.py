"""Prometheus config, alert rules and their unit tests, as `make test` checks them.

    ops/prometheus.sh check  ->  promtool check config + check rules
    ops/prometheus.sh test   ->  promtool test rules ops/prometheus/alert-rules.test.yml

The script installs the Debian package `prometheus` (prometheus + promtool)
when it is missing and we are root with apt-get, as in CI. Elsewhere, without
promtool, these tests skip and say so. No part of the stack is needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ops" / "prometheus.sh"
RULES = ROOT / "ops" / "prometheus" / "alert-rules.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alert-rules.test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "engine.json"
# The first run may install the package with apt-get.
CHECK_TIMEOUT_S = 240
TEST_TIMEOUT_S = 60

_ALERT = re.compile(r"^\s*- alert: (\w+)$", re.MULTILINE)
_EXPECTATION = re.compile(r"alertname: (\w+)\n\s+exp_alerts:(.*)")


def _promtool_installable() -> bool:
    on_debian_as_root = os.geteuid() == 0 and shutil.which("apt-get") is not None
    return shutil.which("promtool") is not None or on_debian_as_root


def run_script(command: str, timeout_s: int) -> subprocess.CompletedProcess[str]:
    if not _promtool_installable():
        pytest.skip(
            "promtool is missing and cannot be installed here (needs root and apt-get): install 'prometheus'"
        )
    return subprocess.run(
        [str(SCRIPT), command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_config_and_rules_pass_promtool_check() -> None:
    result = run_script("check", CHECK_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "prometheus.yml is valid prometheus config file syntax" in output, output
    assert "1 rule files found" in output, output
    assert "FAILED" not in output, output


def test_alert_rule_unit_tests_pass() -> None:
    result = run_script("test", TEST_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output and "FAILED" not in output, output


def test_every_alert_fires_in_one_unit_test_and_stays_quiet_in_another() -> None:
    alerts = set(_ALERT.findall(RULES.read_text()))
    assert len(alerts) >= 11, alerts
    fires: set[str] = set()
    quiet: set[str] = set()
    for name, rest in _EXPECTATION.findall(RULE_TESTS.read_text()):
        (quiet if rest.strip().startswith("[]") else fires).add(name)
    assert alerts - fires == set(), "alerts never seen firing in a unit test"
    assert alerts - quiet == set(), "alerts never seen quiet in a unit test"
    assert (fires | quiet) - alerts == set(), "unit tests of alerts that do not exist"


def test_every_alert_has_a_severity_and_a_runbook() -> None:
    blocks = _ALERT.split(RULES.read_text())[1:]
    for name, body in zip(blocks[::2], blocks[1::2], strict=True):
        assert re.search(r"severity: (critical|warning)\n", body), name
        assert "summary:" in body and "description:" in body, name


def test_dashboard_queries_prometheus_through_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    exprs: list[str] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            exprs.append(target["expr"])
    text = "\n".join(exprs)
    families = [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "drawdowns_total",
        "drawdown_amount_fen_total",
        "repayments_total",
        "disbursement_latency_seconds_bucket",
        "idempotency_replays_total",
        "idempotency_conflicts_total",
        "outbox_pending",
        "outbox_oldest_age_seconds",
        "shard_pool_connections",
        "shard_up",
        "shard_query_duration_seconds_bucket",
        "redis_errors_total",
        "ledger_imbalance_fen",
    ]
    missing = [family for family in families if family not in text]
    assert missing == [], missing
