"""Locust load test of the channel API: signed channel users, a journey user, shapes, SLO gate.

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 2m \\
        --host http://127.0.0.1:8080 --csv .run/loadtest/run --html .run/loadtest/report.html

    ChannelUser (weight 9)   one seeded customer each; weighted tasks:
        drawdown 4 · loan 4 · schedule 2 · due repayment 2 · prepayment 2 ·
        combined repayment 1 · customer's loans 1
    JourneyUser (weight 1)   drawdown ─► GET /v1/loans/{id}, backing off from
                             LOADTEST_POLL_FIRST_S to LOADTEST_POLL_MAX_S, until
                             `disbursed` (or `failed`, or LOADTEST_JOURNEY_TIMEOUT_S) ─►
                             one request event of type JOURNEY with the whole time
    OriginationUser (weight 1)  a new applicant: application (polled to its decision)
                             ─► a loan officer approves and records the 面签
                             (LOADTEST_OPERATOR_TOKEN) ─► signing code, read from the
                             fake SMS gateway (LOADTEST_SMS_URL) ─► signature ─► drawdown
                             ─► disbursed ─► one request event of type SYSTEM with the
                             system's own time: application to decision plus drawdown to
                             money (what the officer and the customer take is not in it;
                             the engine's origination_system_seconds measures the same)

Customers, lines, cards and loans come from the seeded file (`python -m loadtest
seed` writes it; LOADTEST_SEEDED names another), never from the measured phase.
Every request is signed as API.md says (`loadtest.signing`) and every POST has a
new Idempotency-Key. A response counts as a success only if it is one of the
outcomes the task expects: a `due` repayment of a loan with nothing due is
answered 422 NOTHING_DUE, which is right, so it is a success; any other
answer is a failure. `due` repayments go to the loans the seeding made due today,
prepayments to the others (the seeded file's `due_today`).

Shapes (LOADTEST_SHAPE): unset, the -u/-r/-t options drive the run; `step`
(StepLoad: LOADTEST_STEP_USERS more users every LOADTEST_STEP_S, up to
LOADTEST_STEP_COUNT steps); `spike` (SpikeLoad: a base load, a spike of
LOADTEST_SPIKE_USERS for LOADTEST_SPIKE_S, the base again).

SLO gate, when Locust quits (exit code 1 if any gate fails): drawdown p99 above
LOADTEST_SLO_DRAWDOWN_P99_MS (200), failure ratio above LOADTEST_SLO_FAILURE_RATIO
(0.001), any journey above LOADTEST_SLO_JOURNEY_MAX_S (30), any origination whose
system time is above LOADTEST_SLO_SYSTEM_MAX_S (30: the call's 30 seconds, the
customer's own time excluded). LOADTEST_SLO_GATES picks the gates (default
`failures,drawdown_p99,journey,system`; the smoke test gates on `failures,system`).

Locust users are gevent greenlets: this file imports no asyncio code, and of the
project only `loadtest.signing` and `loadtest.client_data` (standard library).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any, Final

from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest.client_data import (
    SeededCustomer,
    make_id_number,
    random_bank_card,
    random_phone,
    read_seeded,
    seeded_file_path,
    seeded_name,
)
from loadtest.signing import auth_headers

log = logging.getLogger("loadtest")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


CHANNEL_ID: Final = os.environ.get("LOADTEST_CHANNEL_ID") or "demo"
# The local stack's published demo secret (API.md), not a secret.
CHANNEL_SECRET: Final = os.environ.get("LOADTEST_CHANNEL_SECRET") or "demo-secret"
SEEDED_MAX: Final = _env_int("LOADTEST_SEEDED_MAX", 200_000)
DRAWDOWN_AMOUNT: Final = os.environ.get("LOADTEST_DRAWDOWN_AMOUNT") or "100.00"
PREPAY_AMOUNT: Final = os.environ.get("LOADTEST_PREPAY_AMOUNT") or "10.00"
# Polls back off from POLL_FIRST_S, doubling, to POLL_MAX_S: precise for a fast
# journey, light on the engine for a slow one.
POLL_FIRST_S: Final = _env_float("LOADTEST_POLL_FIRST_S", 0.05)
POLL_MAX_S: Final = _env_float("LOADTEST_POLL_MAX_S", 1.0)
JOURNEY_TIMEOUT_S: Final = _env_float("LOADTEST_JOURNEY_TIMEOUT_S", 60.0)
DRAWN_LOANS_KEPT_MAX: Final = 20  # loans a user drew in this run, kept for repayments

SLO_DRAWDOWN_P99_MS: Final = _env_float("LOADTEST_SLO_DRAWDOWN_P99_MS", 200.0)
SLO_FAILURE_RATIO: Final = _env_float("LOADTEST_SLO_FAILURE_RATIO", 0.001)
SLO_JOURNEY_MAX_S: Final = _env_float("LOADTEST_SLO_JOURNEY_MAX_S", 30.0)
SLO_SYSTEM_MAX_S: Final = _env_float("LOADTEST_SLO_SYSTEM_MAX_S", 30.0)
SLO_GATES: Final = frozenset(
    (os.environ.get("LOADTEST_SLO_GATES") or "failures,drawdown_p99,journey,system").split(",")
)
SMS_URL: Final = (os.environ.get("LOADTEST_SMS_URL") or "http://127.0.0.1:18602").rstrip("/")
# The local stack's published operator token (README), not a secret.
OPERATOR_TOKEN: Final = os.environ.get("LOADTEST_OPERATOR_TOKEN") or "demo-operator"

DRAWDOWN_NAME: Final = "/v1/drawdowns"
JOURNEY_TYPE: Final = "JOURNEY"
JOURNEY_NAME: Final = "drawdown to disbursed"
SYSTEM_TYPE: Final = "SYSTEM"
SYSTEM_NAME: Final = "application to money (system time)"
SIGNER_HEADERS: Final = {"X-Signer-IP": "198.51.100.20", "X-Signer-Device-Id": "locust"}
CODE_IN_SMS: Final = re.compile(r"验证码([0-9]{6})")
TERMS_MONTHS: Final = (3, 6, 12)

# Business refusals a task expects under this load (answered 422 with these codes).
DRAWDOWN_REFUSALS: Final = frozenset({"CREDIT_LINE_EXCEEDED"})
REPAYMENT_REFUSALS: Final = frozenset(
    {
        "NOTHING_DUE",
        "NOTHING_TO_PREPAY",
        "LOAN_NOT_ACTIVE",
        "ARREARS_FIRST",
        "PREPAYMENT_NOT_PARTIAL",
        "RULE_NOT_APPLICABLE",
        "REPAYMENT_IN_PROGRESS",
    }
)

_customers: list[SeededCustomer] = []


@events.init.add_listener
def _load_seeded(environment: Environment, **_kwargs: Any) -> None:
    """Read the seeded customers once per process, before any user starts."""
    if _customers:
        return
    _customers.extend(read_seeded(seeded_file_path(), SEEDED_MAX))
    log.info("loadtest: %d seeded customers from %s", len(_customers), seeded_file_path())


class _SignedUser(FastHttpUser):
    """A channel system: signs every request, judges every answer."""

    abstract = True
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        assert _customers, "no seeded customers loaded"
        self.customer = random.choice(_customers)
        self.drawn: list[str] = []

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        name: str,
        ok: Iterable[int] = (200,),
        refusals: frozenset[str] = frozenset(),
        extra_headers: dict[str, str] | None = None,
        operator: bool = False,
    ) -> dict[str, Any] | None:
        """One request, signed as the channel (or as an operator, with the token); the
        decoded body if it is an expected outcome, else None."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        key = secrets.token_urlsafe(18) if method == "POST" else None
        if operator:
            headers["X-Operator-Token"] = OPERATOR_TOKEN
            if key is not None:
                headers["Idempotency-Key"] = key
        else:
            headers.update(
                auth_headers(CHANNEL_ID, CHANNEL_SECRET, method, path, data, idempotency_key=key)
            )
        headers.update(extra_headers or {})
        with self.client.request(
            method, path, data=data, headers=headers, name=name, catch_response=True
        ) as response:
            reply = _decode(response.content)
            if response.status_code in ok:
                response.success()
                return reply
            code = reply.get("code") if reply else None
            if response.status_code == 422 and code in refusals:
                response.success()
                return reply
            response.failure(f"{response.status_code} {code or (response.content or b'')[:120]!r}")
            return None

    def drawdown(self) -> str | None:
        body = {
            "credit_line_id": self.customer.credit_line_id,
            "amount": DRAWDOWN_AMOUNT,
            "term_months": random.choice(TERMS_MONTHS),
            "repayment_method": "equal_installment",
            "disburse_to": self.customer.bank_card,
        }
        reply = self.call(
            "POST", DRAWDOWN_NAME, body, name=DRAWDOWN_NAME, ok=(201,), refusals=DRAWDOWN_REFUSALS
        )
        loan_id = reply.get("loan_id") if reply else None
        if isinstance(loan_id, str):
            self.drawn = [*self.drawn[-(DRAWN_LOANS_KEPT_MAX - 1) :], loan_id]
            return loan_id
        return None

    def loans(self) -> tuple[str, ...]:
        return self.customer.loan_ids + tuple(self.drawn)

    def prepayable(self) -> tuple[str, ...]:
        """Loans with nothing due today (a prepayment of another is ARREARS_FIRST)."""
        return self.customer.not_due_today() + tuple(self.drawn)

    def wait_disbursed(self, loan_id: str, started: float) -> Exception | None:
        """Polls the loan; None once disbursed, else what went wrong."""
        delay_s = POLL_FIRST_S
        while True:
            reply = self.call("GET", f"/v1/loans/{loan_id}", name="/v1/loans/{id} [poll]")
            status = reply.get("status") if reply else None
            if status == "disbursed":
                return None
            if status == "failed" or reply is None:
                return RuntimeError(f"journey ended {status or 'without an answer'}")
            if time.perf_counter() - started > JOURNEY_TIMEOUT_S:
                return TimeoutError(f"not disbursed after {JOURNEY_TIMEOUT_S} s")
            time.sleep(delay_s)  # gevent-patched: yields to other users
            delay_s = min(delay_s * 2, POLL_MAX_S)


def _decode(content: bytes | None) -> dict[str, Any] | None:
    if not content:
        return None
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class ChannelUser(_SignedUser):
    """The channel's everyday traffic on one seeded customer."""

    weight = 9

    @task(4)
    def draw_down(self) -> None:
        self.drawdown()

    @task(4)
    def get_loan(self) -> None:
        loan_id = random.choice(self.loans())
        self.call("GET", f"/v1/loans/{loan_id}", name="/v1/loans/{id}")

    @task(2)
    def get_schedule(self) -> None:
        loan_id = random.choice(self.loans())
        self.call("GET", f"/v1/loans/{loan_id}/schedule", name="/v1/loans/{id}/schedule")

    @task(1)
    def get_customer_loans(self) -> None:
        path = f"/v1/customers/{self.customer.customer_id}/loans"
        self.call("GET", path, name="/v1/customers/{id}/loans")

    @task(2)
    def repay_due(self) -> None:
        # Those the seeding made due today, as a channel offers them (any: NOTHING_DUE).
        loans = self.customer.due_today or self.customer.loan_ids
        item = {"loan_id": random.choice(loans), "mode": "due"}
        self._repay([item], "/v1/repayments [due]")

    @task(2)
    def prepay(self) -> None:
        loan_id = random.choice(self.prepayable())
        item = {"loan_id": loan_id, "mode": "prepay", "amount": PREPAY_AMOUNT}
        self._repay([item], "/v1/repayments [prepay]")

    @task(1)
    def repay_combined(self) -> None:
        loans = self.prepayable()
        if len(loans) < 2:
            return
        items = [
            {"loan_id": loan_id, "mode": "prepay", "amount": PREPAY_AMOUNT}
            for loan_id in random.sample(loans, 2)
        ]
        self._repay(items, "/v1/repayments [combined]")

    def _repay(self, items: list[dict[str, str]], name: str) -> None:
        body = {
            "customer_id": self.customer.customer_id,
            "items": items,
            "debit_from": self.customer.bank_card,
        }
        self.call("POST", "/v1/repayments", body, name=name, ok=(201,), refusals=REPAYMENT_REFUSALS)


class JourneyUser(_SignedUser):
    """Drawdown to `disbursed`, timed as one JOURNEY request."""

    weight = 1

    @task
    def journey(self) -> None:
        started = time.perf_counter()
        loan_id = self.drawdown()
        if loan_id is None:
            return  # the drawdown itself is already counted (refusal or failure)
        error = self.wait_disbursed(loan_id, started)
        events.request.fire(
            request_type=JOURNEY_TYPE,
            name=JOURNEY_NAME,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


def new_applicant() -> dict[str, str]:
    """A random adult of the demo rules' age band whom the fake bureau reports clean and
    the fake verifier recognises (no number ending 0000)."""
    birth = dt.date(1970, 1, 1) + dt.timedelta(days=secrets.randbelow(9000))
    phone, card = random_phone(), random_bank_card()
    while phone.endswith("0000") or card.endswith("0000"):
        phone, card = random_phone(), random_bank_card()
    return {
        "name": seeded_name(secrets.randbelow(10**8)),
        "id_number": make_id_number("110105", birth, f"{secrets.randbelow(1000):03d}"),
        "phone": phone,
        "bank_card": card,
    }


class OriginationUser(_SignedUser):
    """A new customer from application to money, timed as the system's own time."""

    weight = 1

    @task
    def originate(self) -> None:
        applicant = new_applicant()
        started = time.perf_counter()
        reply = self._apply(applicant)
        if reply is None:
            return  # the failure is already counted
        application = self._decided(reply, started)
        decision_s = time.perf_counter() - started
        if application is None:
            self._system_time(decision_s * 1000, RuntimeError("not queued for review"))
            return
        contract_id = self._approved(application)
        if contract_id is None or not self._signed(contract_id):
            return
        drawn = time.perf_counter()
        body = {
            "credit_line_id": application["credit_line_id"],
            "amount": DRAWDOWN_AMOUNT,
            "term_months": 6,
            "repayment_method": "equal_installment",
            "disburse_to": applicant["bank_card"],
        }
        reply = self.call("POST", DRAWDOWN_NAME, body, name=DRAWDOWN_NAME, ok=(201,))
        if reply is None:
            return
        error = self.wait_disbursed(str(reply["loan_id"]), drawn)
        self._system_time((decision_s + time.perf_counter() - drawn) * 1000, error)

    @staticmethod
    def _system_time(elapsed_ms: float, error: Exception | None) -> None:
        events.request.fire(
            request_type=SYSTEM_TYPE,
            name=SYSTEM_NAME,
            response_time=elapsed_ms,
            response_length=0,
            exception=error,
            context={},
        )

    def _apply(self, applicant: dict[str, str]) -> dict[str, Any] | None:
        body = {
            "tenant_id": "demo",
            "product_code": "demo-credit",
            "channel_serial": "LC" + secrets.token_hex(12),
            "applicant": applicant,
            "requested_amount": "20000.00",
            "requested_term_months": 12,
            "repayment_method": "equal_installment",
            "consent": {"credit_report": True, "terms_version": "2026-01"},
        }
        return self.call("POST", "/v1/applications", body, name="/v1/applications", ok=(201,))

    def _decided(self, reply: dict[str, Any] | None, started: float) -> dict[str, Any] | None:
        """Polled while the bureau is slow; a clean applicant is queued for review (None:
        anything else)."""
        while reply is not None and reply.get("status") == "pending_bureau":
            if time.perf_counter() - started > JOURNEY_TIMEOUT_S:
                return None
            time.sleep(POLL_FIRST_S)
            path = f"/v1/applications/{reply['application_id']}"
            reply = self.call("GET", path, name="/v1/applications/{id} [poll]")
        if reply is None or reply.get("status") != "pending_review":
            return None
        return reply

    def _approved(self, application: dict[str, Any]) -> str | None:
        """The loan officer approves and records the 面签 the rules asked for."""
        path = f"/v1/applications/{application['application_id']}/approve"
        approved = self.call(
            "POST", path, {"reason": "load test"}, name="/v1/applications/{id}/approve",
            operator=True,
        )  # fmt: skip
        if approved is None:
            return None
        contract_id = str(approved["contract_id"])
        application["credit_line_id"] = approved["credit_line_id"]
        if approved["decision"]["face_to_face_required"]:
            meeting = {"officer": "load test", "place": "branch", "met_at": _now_iso()}
            path = f"/v1/contracts/{contract_id}/face-to-face"
            if self.call("POST", path, meeting, name="/v1/contracts/{id}/face-to-face",
                         operator=True) is None:  # fmt: skip
                return None
        return contract_id

    def _signed(self, contract_id: str) -> bool:
        """The customer asks for a code, reads it from the SMS and signs."""
        issued = self.call(
            "POST", f"/v1/contracts/{contract_id}/otp", name="/v1/contracts/{id}/otp"
        )
        if issued is None:
            return False
        url = f"{SMS_URL}/fake/messages?reference={issued['sms_reference']}"
        with self.client.get(url, name="fake sms: the code", catch_response=True) as response:
            found = _decode_list(response.content)
            match = CODE_IN_SMS.search(found[0].get("text", "")) if found else None
            if match is None:
                response.failure("no code in the SMS")
                return False
            response.success()
        body = {"confirmed": True, "otp": match.group(1)}
        path = f"/v1/contracts/{contract_id}/sign"
        signed = self.call(
            "POST", path, body, name="/v1/contracts/{id}/sign", extra_headers=SIGNER_HEADERS
        )
        return signed is not None


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _decode_list(content: bytes | None) -> list[dict[str, Any]]:
    try:
        value = json.loads(content or b"[]")
    except ValueError:
        return []
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


class StepLoad(LoadTestShape):
    """LOADTEST_STEP_USERS more users every LOADTEST_STEP_S, LOADTEST_STEP_COUNT steps."""

    abstract = os.environ.get("LOADTEST_SHAPE") != "step"
    step_users = _env_int("LOADTEST_STEP_USERS", 10)
    step_s = _env_float("LOADTEST_STEP_S", 30.0)
    step_count = _env_int("LOADTEST_STEP_COUNT", 6)

    def tick(self) -> tuple[int, float] | None:
        run_time_s = self.get_run_time()
        step = int(run_time_s // self.step_s) + 1
        if step > self.step_count:
            return None
        return step * self.step_users, float(self.step_users)


class SpikeLoad(LoadTestShape):
    """LOADTEST_BASE_USERS, then LOADTEST_SPIKE_USERS for LOADTEST_SPIKE_S, then the base again."""

    abstract = os.environ.get("LOADTEST_SHAPE") != "spike"
    base_users = _env_int("LOADTEST_BASE_USERS", 10)
    spike_users = _env_int("LOADTEST_SPIKE_USERS", 100)
    before_s = _env_float("LOADTEST_BEFORE_SPIKE_S", 30.0)
    spike_s = _env_float("LOADTEST_SPIKE_S", 20.0)
    after_s = _env_float("LOADTEST_AFTER_SPIKE_S", 40.0)

    def tick(self) -> tuple[int, float] | None:
        run_time_s = self.get_run_time()
        if run_time_s < self.before_s:
            return self.base_users, float(self.base_users)
        if run_time_s < self.before_s + self.spike_s:
            return self.spike_users, float(self.spike_users)  # all at once: a spike
        if run_time_s < self.before_s + self.spike_s + self.after_s:
            return self.base_users, float(self.spike_users)
        return None


@events.quitting.add_listener
def _slo_gate(environment: Environment, **_kwargs: Any) -> None:
    """Sets the exit code: 1 if any selected SLO gate fails, else 0."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master judges the aggregated stats
    stats = environment.stats
    broken: list[str] = []
    if "failures" in SLO_GATES and stats.total.fail_ratio > SLO_FAILURE_RATIO:
        broken.append(f"failure ratio {stats.total.fail_ratio:.4%} > {SLO_FAILURE_RATIO:.4%}")
    drawdowns = stats.entries.get((DRAWDOWN_NAME, "POST"))
    if "drawdown_p99" in SLO_GATES and drawdowns is not None and drawdowns.num_requests:
        p99_ms = drawdowns.get_response_time_percentile(0.99)
        if p99_ms > SLO_DRAWDOWN_P99_MS:
            broken.append(f"drawdown p99 {p99_ms:.0f} ms > {SLO_DRAWDOWN_P99_MS:.0f} ms")
    journeys = stats.entries.get((JOURNEY_NAME, JOURNEY_TYPE))
    if "journey" in SLO_GATES and journeys is not None and journeys.num_requests:
        max_s = journeys.max_response_time / 1000
        if max_s > SLO_JOURNEY_MAX_S:
            broken.append(f"slowest journey {max_s:.1f} s > {SLO_JOURNEY_MAX_S:.0f} s")
    originations = stats.entries.get((SYSTEM_NAME, SYSTEM_TYPE))
    if "system" in SLO_GATES and originations is not None and originations.num_requests:
        max_s = originations.max_response_time / 1000
        if max_s > SLO_SYSTEM_MAX_S:
            broken.append(
                f"slowest origination {max_s:.1f} s of system time > {SLO_SYSTEM_MAX_S:.0f} s"
            )
    for reason in broken:
        log.error("SLO gate failed: %s", reason)
    if not broken:
        log.info("SLO gates passed: %s", ", ".join(sorted(SLO_GATES)))
    environment.process_exit_code = 1 if broken else 0
