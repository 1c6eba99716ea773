"""The day-end batch against databases of the test's own (tests/isolated.py): what it
books, that it books it once, what it refuses, and the books' invariants after it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.settings import Settings
from tests.isolated import Isolated

DAY = dt.date(2026, 11, 16)
ONE = dt.timedelta(days=1)


@pytest.fixture
async def books(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "version": "v1",
                "rules": [
                    {"name": "freeze", "when": {"dpd_above": 0}, "action": "freeze_lines"},
                    {"name": "collect", "when": {"dpd_above": 2}, "action": "collection_queue"},
                    {"name": "remind", "when": {"days_before_due": 3}, "action": "remind_sms"},
                ],
            }
        )
    )
    base = settings.control_dsn.rsplit("/", 1)[0]
    isolated = Isolated(base, tmp_path, {"ENGINE_EOD_RULES_FILE": str(rules)})
    await isolated.create(DAY)
    try:
        yield isolated
    finally:
        await isolated.drop()


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _all(books: Isolated, sql: str, *args: object) -> list[asyncpg.Record]:
    rows = []
    for dsn in books.shard_dsns:
        rows += await _fetch(dsn, sql, *args)
    return rows


async def test_a_day_closes_once_with_every_loan_accrued(books: Isolated) -> None:
    books.seed(30)
    [outcome] = await books.eod(DAY)
    assert outcome.closed and all(s.finished for s in outcome.shards)
    assert await books.business_date() == DAY + ONE
    assert await books.problems(accrued_through=DAY) == []
    accrued = await _all(books, "SELECT loan_id, interest_accrued_fen FROM loan_accrual")
    assert len(accrued) == 120  # every seeded loan has run at least a day
    postings = await _all(books, "SELECT count(*) FROM ledger_txn WHERE kind = 'interest_accrual'")
    # Again: nothing to close, nothing booked twice.
    assert await books.eod(DAY) == []
    assert await _all(books, "SELECT loan_id, interest_accrued_fen FROM loan_accrual") == accrued
    assert (
        await _all(books, "SELECT count(*) FROM ledger_txn WHERE kind = 'interest_accrual'")
        == postings
    )


async def test_a_missed_debit_makes_the_loan_late_charged_classified_and_ruled(
    books: Isolated,
) -> None:
    books.seed(16)  # every eighth loan has an installment due on DAY
    [closed] = await books.eod(DAY)
    assert closed.closed
    debits = await _all(books, "SELECT count(*) FROM repayment WHERE channel_id = 'eod'")
    assert sum(r[0] for r in debits) > 0
    assert await books.settle_debits(succeeded=False) > 0  # the cards had no money
    # The next days: late (DPD 1, 2, 3), charged each day, lines frozen at once, a case at 3.
    for n in range(1, 4):
        [closed] = await books.eod(DAY + n * ONE)
        assert closed.closed
        await books.settle_debits(succeeded=False)
        assert await books.problems(accrued_through=DAY + n * ONE) == []
    risks = await _all(books, "SELECT days_past_due, classification FROM loan_risk")
    assert risks and {tuple(r) for r in risks} == {(3, "special_mention")}
    frozen = await _all(
        books, "SELECT count(*) FROM credit_line WHERE status = 'frozen' AND frozen_by = 'rule'"
    )
    assert sum(r[0] for r in frozen) > 0
    cases = await _all(books, "SELECT officer_id, dpd_at_open FROM collection_case")
    assert cases and all(r["dpd_at_open"] == 3 for r in cases)
    charges = await _all(
        books, "SELECT count(*), coalesce(sum(amount_fen), 0) FROM ledger_leg l "
        "JOIN ledger_txn t USING (txn_id) WHERE t.kind = 'penalty_accrual' AND l.amount_fen > 0"
    )  # fmt: skip
    assert sum(r[1] for r in charges) > 0
    # Paid on the fourth day: cured at that day-end, the case closed, the class back.
    [closed] = await books.eod(DAY + 4 * ONE)
    assert await books.settle_debits(succeeded=True) > 0
    [closed] = await books.eod(DAY + 5 * ONE)
    assert await books.problems(accrued_through=DAY + 5 * ONE) == []
    cured = await _all(books, "SELECT days_past_due, classification FROM loan_risk")
    assert {tuple(r) for r in cured} == {(0, "normal")}
    assert await _all(books, "SELECT 1 FROM collection_case WHERE status = 'open'") == []
    changes = await _all(books, "SELECT from_class, to_class FROM loan_class_change")
    assert {tuple(r) for r in changes} == {
        ("normal", "special_mention"),
        ("special_mention", "normal"),
    }


async def test_dates_that_cannot_close_are_refused(books: Isolated) -> None:
    later = books.cli("-m", "engine", "eod", "run", "--date", str(DAY + 3 * ONE))
    assert later.returncode == 2
    assert "has not begun" in later.stderr
    assert (await books.eod(DAY))[0].closed
    earlier = books.cli("-m", "engine", "eod", "run", "--date", str(DAY - ONE))
    assert earlier.returncode == 2
    assert "a closed day is not run again" in earlier.stderr
    again = books.cli("-m", "engine", "eod", "run", "--date", str(DAY))
    assert again.returncode == 0, again.stderr
    assert "nothing to close" in again.stdout
    status = books.cli("-m", "engine", "eod", "status")
    assert status.returncode == 0, status.stderr
    assert f"last closed    {DAY}" in status.stdout
    assert "shard_0: overdue" in status.stdout


async def test_a_shard_down_leaves_the_day_open_and_resumes_when_back(
    books: Isolated, settings: Settings
) -> None:
    books.seed(10)
    base = settings.control_dsn.rsplit("/", 1)[0]
    admin = await asyncpg.connect(base + "/postgres")
    down = books.names["s1"]
    try:
        await admin.execute(f"ALTER DATABASE {down} ALLOW_CONNECTIONS false")
        [outcome] = await books.eod(DAY)
        assert not outcome.closed
        by_shard = {s.shard: s for s in outcome.shards}
        assert by_shard["shard_0"].finished and not by_shard["shard_1"].finished
        assert await books.business_date() == DAY + ONE  # online traffic has moved on
        status = books.cli("-m", "engine", "eod", "status")  # names the shard that is down
        assert status.returncode == 1, status  # 1: a shard needs attention
        assert "shard_1: unreachable" in status.stdout, status.stdout
        assert "shard_0: overdue" in status.stdout
        await admin.execute(f"ALTER DATABASE {down} ALLOW_CONNECTIONS true")
    finally:
        await admin.execute(f"ALTER DATABASE {down} ALLOW_CONNECTIONS true")
        await admin.close()
    [resumed] = await books.eod(DAY)  # the open date, shard_1 where it stopped
    assert resumed.business_date == DAY and resumed.closed
    assert await books.problems(accrued_through=DAY) == []


async def test_finished_outbox_rows_past_retention_are_pruned(books: Isolated) -> None:
    books.seed(4)
    conn = await asyncpg.connect(books.shard_dsns[0])
    try:
        await conn.execute(
            """INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, state, done_at, payload)
               VALUES (1, 1, 'sms', 1, 'done', now() - interval '400 days', '{}'),
                      (2, 1, 'sms', 1, 'done', now(), '{}'),
                      (3, 1, 'sms', 1, 'pending', NULL, '{}')"""
        )
    finally:
        await conn.close()
    assert (await books.eod(DAY))[0].closed
    kept = await _fetch(books.shard_dsns[0], "SELECT outbox_id FROM outbox WHERE outbox_id < 4")
    assert sorted(r[0] for r in kept) == [2, 3]


async def test_reminders_name_each_customers_amount_once(books: Isolated) -> None:
    books.seed(60)  # loans drawn 1-27 days ago: first installments due in 4-30 days
    target = DAY + 4 * ONE  # reminded three days before: at the day-end of DAY + 1
    expected: dict[int, int] = {}
    for row in await _all(
        books,
        """SELECT l.customer_id, sum(x.principal + x.interest)::bigint AS fen
           FROM loan l JOIN loan_plan p USING (loan_id),
                unnest(p.due_date, p.principal_fen, p.interest_fen) AS x(due, principal, interest)
           WHERE l.status = 'disbursed' AND x.due = $1 GROUP BY l.customer_id""",
        target,
    ):
        expected[row["customer_id"]] = row["fen"]
    assert expected, "the seed put no installment on the target date"
    date_text = f"{target.month}月{target.day}日"
    sent_sql = """SELECT customer_id, payload->>'text' AS text FROM outbox
                  WHERE kind = 'sms' AND payload->>'kind' = 'reminder'"""
    for day in (DAY, DAY + ONE):
        [closed] = await books.eod(day)
        assert closed.closed
    sent = [r for r in await _all(books, sent_sql) if date_text in r["text"]]
    assert sorted(r["customer_id"] for r in sent) == sorted(expected)  # one each
    for row in sent:
        fen = expected[row["customer_id"]]
        assert f"{fen // 100}.{fen % 100:02d}" in row["text"], row["text"]
    # The next day-end reminds of the next date, not of this one again.
    await books.eod(DAY + 2 * ONE)
    texts = [r["text"] for r in await _all(books, sent_sql)]
    assert sum(date_text in text for text in texts) == len(sent)
    assert any(f"{target.month}月{target.day + 1}日" in text for text in texts)
