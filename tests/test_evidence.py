"""The e-contract evidence chain and the contract templates, pure (no database).

A chain of signed documents is built with `next_entry`, then tampered with in
every way a person with write access to the table could: a document's text, a
document hash, any field of an entry (with or without recomputing its hash),
an entry removed in the middle or at the end, two entries swapped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.origination.evidence import (
    CONTRACT_PLACEHOLDERS,
    CREDIT_AUTHORIZATION_TEMPLATE,
    GENESIS,
    LOAN_CONTRACT_TEMPLATE,
    EvidenceEntry,
    TemplateError,
    chain_entry,
    check_template,
    document_sha256,
    next_entry,
    render_contract,
    signed_at_iso,
    template_placeholders,
    verify_chain,
    verify_documents,
)

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
FIELDS = {
    "contract_id": "7301234567890123",
    "tenant_name": "演示农商银行",
    "product_name": "农户经营性信用贷款",
    "name_masked": "张*",
    "id_number_masked": "110***********002X",
    "limit": "50000.00",
    "annual_rate_pct": "4.35",
    "max_term_months": "12",
    "repayment_methods": "等额本息、利随本清",
    "date": "2026-05-20",
}


def build(count: int) -> tuple[list[EvidenceEntry], dict[tuple[int, str], str]]:
    entries: list[EvidenceEntry] = []
    documents: dict[tuple[int, str], str] = {}
    start = dt.datetime(2026, 5, 20, 9, 30, tzinfo=SHANGHAI)
    for number in range(count):
        contract_id = 7_301_234_567_890_000 + number // 2
        kind = "loan_contract" if number % 2 == 0 else "credit_authorization"
        template = (
            LOAN_CONTRACT_TEMPLATE if kind == "loan_contract" else CREDIT_AUTHORIZATION_TEMPLATE
        )
        fields = {
            k: v
            for k, v in (FIELDS | {"contract_id": str(contract_id)}).items()
            if k in template_placeholders(template)
        }
        text = render_contract(template, fields)
        documents[(contract_id, kind)] = text
        signed_at = signed_at_iso(start + dt.timedelta(seconds=number, microseconds=number))
        previous = entries[-1] if entries else None
        entries.append(next_entry(previous, document_sha256(text), signed_at, contract_id, kind))
    return entries, documents


def kinds(problems: list[Any]) -> list[tuple[int, str]]:
    return [(problem.seq, problem.kind) for problem in problems]


def test_a_built_chain_verifies() -> None:
    entries, documents = build(20)
    assert [e.seq for e in entries] == list(range(1, 21))
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    assert verify_chain(entries) == []
    assert verify_chain(entries, head_hash=entries[-1].entry_hash) == []
    assert verify_documents(entries, documents) == []
    # a window of the chain, from the hash before it
    assert verify_chain(entries[5:], start_seq=6, start_prev_hash=entries[4].entry_hash) == []


def test_the_encoding_is_frozen() -> None:
    """Stored chains must keep verifying: this known answer changes only with a new tag."""
    entry_hash = chain_entry(
        GENESIS,
        1,
        hashlib.sha256(b"contract").digest(),
        "2026-05-20T02:03:04.123456Z",
        1234567890123,
        kind="loan_contract",
    )
    assert entry_hash.hex() == "a6c2f6a31b0cf78c4baeebf50e50168a931f648217c00f2355828acec64126ea"


def test_a_changed_document_is_detected() -> None:
    entries, documents = build(6)
    key = (entries[2].contract_id, entries[2].kind)
    documents[key] = documents[key].replace("50000.00", "500000.00")
    assert kinds(verify_documents(entries, documents)) == [(3, "document_changed")]
    del documents[(entries[4].contract_id, entries[4].kind)]
    assert kinds(verify_documents(entries, documents)) == [
        (3, "document_changed"),
        (5, "document_missing"),
    ]
    assert verify_chain(entries) == []  # the chain itself is intact: only the text moved


def test_a_changed_document_hash_is_detected() -> None:
    entries, _ = build(6)
    forged = hashlib.sha256(b"another contract").digest()
    entries[3] = msgspec.structs.replace(entries[3], document_sha256=forged)
    assert kinds(verify_chain(entries)) == [(4, "entry_changed")]


@pytest.mark.parametrize(
    "change",
    [
        {"signed_at_iso": "2026-05-21T01:30:03.000003Z"},
        {"contract_id": 1},
        {"kind": "loan_contract"},  # it was the credit authorization
        {"signed_at_iso": "2026-05-20 09:30:03"},  # not even canonical any more
    ],
)
def test_a_changed_entry_is_detected(change: dict[str, Any]) -> None:
    entries, _ = build(6)
    entries[3] = msgspec.structs.replace(entries[3], **change)
    assert kinds(verify_chain(entries)) == [(4, "entry_changed")]


def test_a_changed_entry_with_its_hash_recomputed_breaks_the_next_link() -> None:
    entries, _ = build(6)
    e = entries[3]
    forged_doc = hashlib.sha256(b"forged").digest()
    rehashed = chain_entry(
        e.prev_hash, e.seq, forged_doc, e.signed_at_iso, e.contract_id, kind=e.kind
    )
    entries[3] = msgspec.structs.replace(e, document_sha256=forged_doc, entry_hash=rehashed)
    assert kinds(verify_chain(entries)) == [(5, "broken_link")]


def test_a_removed_entry_is_detected() -> None:
    entries, _ = build(8)
    del entries[4]
    assert kinds(verify_chain(entries)) == [(6, "seq_gap"), (6, "broken_link")]
    entries, _ = build(8)
    head = entries[-1].entry_hash
    assert kinds(verify_chain(entries[:-1], head_hash=head)) == [(7, "head_mismatch")]
    assert kinds(verify_chain(entries[1:])) == [(2, "seq_gap"), (2, "broken_link")]


def test_swapped_entries_are_detected() -> None:
    entries, _ = build(6)
    entries[2], entries[3] = entries[3], entries[2]
    assert kinds(verify_chain(entries)) == [
        (4, "seq_gap"),
        (4, "broken_link"),
        (3, "seq_gap"),
        (3, "broken_link"),
        (5, "seq_gap"),
        (5, "broken_link"),
    ]


@settings(max_examples=100, deadline=None)
@given(
    position=st.integers(0, 5),
    field=st.sampled_from(["seq", "contract_id", "document_sha256", "prev_hash", "entry_hash"]),
    flip=st.integers(1, 255),
)
def test_any_single_change_is_detected(position: int, field: str, flip: int) -> None:
    entries, _ = build(6)
    value = getattr(entries[position], field)
    if isinstance(value, bytes):
        changed: Any = bytes([value[0] ^ flip]) + value[1:]
    else:
        changed = value + flip
    entries[position] = msgspec.structs.replace(entries[position], **{field: changed})
    assert verify_chain(entries, head_hash=build(6)[0][-1].entry_hash) != []


def test_the_encoding_is_unambiguous_and_checked() -> None:
    doc = hashlib.sha256(b"d").digest()
    at = "2026-05-20T01:30:00.000000Z"
    base = chain_entry(GENESIS, 1, doc, at, 5, kind="loan_contract")
    assert base != chain_entry(GENESIS, 1, doc, at, 5, kind="credit_authorization")
    assert base != chain_entry(GENESIS, 1, doc, at, 6, kind="loan_contract")
    assert base != chain_entry(GENESIS, 2, doc, at, 5, kind="loan_contract")
    assert chain_entry(GENESIS, 1, doc, at, 5) != chain_entry(GENESIS, 1, doc, at, 5, kind="x")
    bad_calls: list[Callable[[], bytes]] = [
        lambda: chain_entry(b"short", 1, doc, at, 5),
        lambda: chain_entry(GENESIS, 0, doc, at, 5),
        lambda: chain_entry(GENESIS, 1, doc[:31], at, 5),
        lambda: chain_entry(GENESIS, 1, doc, "2026-05-20T09:30:00+08:00", 5),
        lambda: chain_entry(GENESIS, 1, doc, at, 2**63),
    ]
    for bad in bad_calls:
        with pytest.raises(ValueError):
            bad()


def test_signed_at_is_one_text_for_one_instant() -> None:
    local = dt.datetime(2026, 5, 20, 9, 30, 0, 5, tzinfo=SHANGHAI)
    assert signed_at_iso(local) == "2026-05-20T01:30:00.000005Z"
    assert signed_at_iso(local.astimezone(dt.UTC)) == signed_at_iso(local)
    with pytest.raises(ValueError, match="time zone"):
        signed_at_iso(dt.datetime(2026, 5, 20, 9, 30))


def test_document_hash_normalizes_newlines_only() -> None:
    assert document_sha256("合同\n") == bytes.fromhex(
        "c009ef1ce36af6c53a47a2bac691bb965982e288c4ded114390ac37a60ff5c01"
    )
    assert document_sha256("a\r\nb\rc\n") == document_sha256("a\nb\nc\n")
    assert document_sha256("a\nb") != document_sha256("a\nb\n")
    assert document_sha256("a b") != document_sha256("a  b")


# ---- templates -------------------------------------------------------------------------


def test_default_templates_render_with_their_fields() -> None:
    loan = render_contract(LOAN_CONTRACT_TEMPLATE, FIELDS)
    assert "人民币 50000.00 元" in loan and "年化利率 4.35%" in loan and "张*" in loan
    assert "{" not in loan and "}" not in loan
    authorization_fields = {
        k: FIELDS[k] for k in template_placeholders(CREDIT_AUTHORIZATION_TEMPLATE)
    }
    authorization = render_contract(CREDIT_AUTHORIZATION_TEMPLATE, authorization_fields)
    assert "征信查询及报送授权书" in authorization and "演示农商银行" in authorization
    for template in (LOAN_CONTRACT_TEMPLATE, CREDIT_AUTHORIZATION_TEMPLATE):
        assert check_template(template, CONTRACT_PLACEHOLDERS) <= CONTRACT_PLACEHOLDERS


def test_rendering_is_strict() -> None:
    short = dict(FIELDS)
    del short["limit"]
    with pytest.raises(TemplateError, match="missing: limit"):
        render_contract(LOAN_CONTRACT_TEMPLATE, short)
    with pytest.raises(TemplateError, match="not in the template: rate"):
        render_contract(LOAN_CONTRACT_TEMPLATE, FIELDS | {"rate": "4.35"})
    with pytest.raises(TemplateError, match="unknown placeholders: bonus"):
        check_template("额度 {limit}，奖励 {bonus}", CONTRACT_PLACEHOLDERS)
    with pytest.raises(TemplateError, match="must be a string"):
        render_contract("{limit}", {"limit": 5})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "template", ["{}", "{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>9}", "{Name}", "{", "}"]
)
def test_templates_take_only_plain_placeholders(template: str) -> None:
    with pytest.raises(TemplateError):
        template_placeholders(template)


def test_literal_braces_and_values_are_not_expanded() -> None:
    assert render_contract("{{条款}} {name_masked}", {"name_masked": "{limit}"}) == "{条款} {limit}"
