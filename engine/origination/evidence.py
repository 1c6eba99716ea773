"""E-contract evidence: documents rendered strictly, their hashes in an append-only chain.

    template + fields --render_contract--> text --document_sha256--> 32 bytes
                        (every placeholder      (UTF-8, newlines made \\n)
                         filled, none extra)

    GENESIS ──► entry 1 ──► entry 2 ──► … ──► entry n          (one chain per shard)
                hash_1 = chain_entry(GENESIS, 1, doc_1, signed_at_1, contract_1, kind=…)
                hash_k = chain_entry(hash_{k-1}, k, doc_k, signed_at_k, contract_k, kind=…)

`chain_entry` hashes an unambiguous encoding: a domain tag, then each field at
a fixed width or behind its length, so no two different entries encode alike:

    b"lending-evidence/v1\\x00" | prev_hash (32) | seq (8, big-endian) |
    document_sha256 (32) | len(signed_at) (4) signed_at (UTF-8) |
    contract_id (8, big-endian, signed) | len(kind) (4) kind (UTF-8)

`signed_at_iso` must be the canonical form made by `signed_at_iso(moment)`
(UTC, microseconds, "Z": "2026-05-01T02:03:04.123456Z"): a timestamp read back
from PostgreSQL then hashes exactly as it did when it was written, whatever
the session's time zone.

`verify_chain` finds, in entries given in seq order:

    entry_changed   its stored hash does not recompute from its fields
    broken_link     its prev_hash is not the previous entry's hash (or GENESIS)
    seq_gap         seq does not follow the previous one by 1 (an entry removed)
    head_mismatch   the last hash differs from an anchored head (entries cut at the end)

and `verify_documents` a document whose text no longer hashes to its entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import string
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import msgspec

HASH_BYTES: Final = 32
GENESIS: Final = bytes(HASH_BYTES)
_DOMAIN_TAG: Final = b"lending-evidence/v1\x00"
_SIGNED_AT_RE: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
)
_PLACEHOLDER_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
KIND_CHARS_MAX: Final = 64
TEMPLATE_CHARS_MAX: Final = 64 * 1024

ProblemKind = Literal[
    "entry_changed",
    "broken_link",
    "seq_gap",
    "head_mismatch",
    "document_changed",
    "document_missing",
]


class TemplateError(ValueError):
    """A template that cannot be rendered, or fields that do not fit it."""


class EvidenceEntry(msgspec.Struct, frozen=True):
    """One link of the chain, as stored (`evidence_entry`)."""

    seq: int
    contract_id: int
    kind: str  # loan_contract | credit_authorization
    document_sha256: bytes
    signed_at_iso: str  # canonical: signed_at_iso(moment)
    prev_hash: bytes
    entry_hash: bytes


class Problem(msgspec.Struct, frozen=True):
    seq: int
    kind: ProblemKind
    detail: str


def signed_at_iso(moment: dt.datetime) -> str:
    """The one text form of a signing time that is hashed: UTC, microseconds, 'Z'."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a signing time needs its time zone")
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"


def chain_entry(
    prev_hash: bytes,
    seq: int,
    document_sha256: bytes,
    signed_at_iso: str,
    contract_id: int,
    *,
    kind: str = "",
) -> bytes:
    """SHA-256 of the entry's canonical encoding (see the module's drawing)."""
    if len(prev_hash) != HASH_BYTES or len(document_sha256) != HASH_BYTES:
        raise ValueError("prev_hash and document_sha256 are 32 bytes each")
    if not 1 <= seq < 2**63:
        raise ValueError(f"seq {seq} out of range: the first entry is 1")
    if not -(2**63) <= contract_id < 2**63:
        raise ValueError("contract_id must fit in 64 bits")
    if _SIGNED_AT_RE.match(signed_at_iso) is None:
        raise ValueError(f"signed_at {signed_at_iso!r} is not canonical: use signed_at_iso()")
    if len(kind) > KIND_CHARS_MAX:
        raise ValueError(f"kind is at most {KIND_CHARS_MAX} characters")
    signed_at = signed_at_iso.encode()
    kind_bytes = kind.encode()
    encoded = b"".join(
        (
            _DOMAIN_TAG,
            prev_hash,
            seq.to_bytes(8, "big"),
            document_sha256,
            len(signed_at).to_bytes(4, "big"),
            signed_at,
            contract_id.to_bytes(8, "big", signed=True),
            len(kind_bytes).to_bytes(4, "big"),
            kind_bytes,
        )
    )
    return hashlib.sha256(encoded).digest()


def next_entry(
    previous: EvidenceEntry | None,
    document_sha256: bytes,
    signed_at_iso: str,
    contract_id: int,
    kind: str,
) -> EvidenceEntry:
    """The entry that follows `previous` (None: the first of the chain)."""
    prev_hash = GENESIS if previous is None else previous.entry_hash
    seq = 1 if previous is None else previous.seq + 1
    entry_hash = chain_entry(prev_hash, seq, document_sha256, signed_at_iso, contract_id, kind=kind)
    return EvidenceEntry(
        seq, contract_id, kind, document_sha256, signed_at_iso, prev_hash, entry_hash
    )


def verify_chain(
    entries: Iterable[EvidenceEntry],
    *,
    start_seq: int = 1,
    start_prev_hash: bytes = GENESIS,
    head_hash: bytes | None = None,
) -> list[Problem]:
    """Every problem of the chain, given in seq order from `start_seq`. Empty: intact.

    A window of the chain can be checked by giving the hash before it
    (`start_prev_hash`) and its first seq. Entries cut off at the end leave no
    trace inside the chain: give `head_hash` (an anchored copy of the last
    hash) to detect that.
    """
    problems: list[Problem] = []
    expected_seq, expected_prev = start_seq, start_prev_hash
    last_hash: bytes | None = None
    for entry in entries:
        if entry.seq != expected_seq:
            detail = f"expected seq {expected_seq}, found {entry.seq}"
            problems.append(Problem(entry.seq, "seq_gap", detail))
        if entry.prev_hash != expected_prev:
            detail = "prev_hash is not the hash of the entry before"
            problems.append(Problem(entry.seq, "broken_link", detail))
        if _recomputed(entry) != entry.entry_hash:
            problems.append(
                Problem(entry.seq, "entry_changed", "the entry hash does not recompute")
            )
        expected_seq, expected_prev = entry.seq + 1, entry.entry_hash
        last_hash = entry.entry_hash
    if head_hash is not None and last_hash != head_hash:
        detail = "the chain does not end at the anchored head: entries missing or added"
        problems.append(Problem(expected_seq - 1, "head_mismatch", detail))
    return problems


def _recomputed(entry: EvidenceEntry) -> bytes | None:
    try:
        return chain_entry(
            entry.prev_hash,
            entry.seq,
            entry.document_sha256,
            entry.signed_at_iso,
            entry.contract_id,
            kind=entry.kind,
        )
    except ValueError:  # a field no longer well-formed was changed too
        return None


def verify_documents(
    entries: Iterable[EvidenceEntry], documents: Mapping[tuple[int, str], str]
) -> list[Problem]:
    """Each entry's document (by (contract_id, kind)) must still hash to what was signed."""
    problems: list[Problem] = []
    for entry in entries:
        text = documents.get((entry.contract_id, entry.kind))
        if text is None:
            detail = f"no document for contract {entry.contract_id} {entry.kind}"
            problems.append(Problem(entry.seq, "document_missing", detail))
        elif document_sha256(text) != entry.document_sha256:
            detail = f"contract {entry.contract_id} {entry.kind} changed since it was signed"
            problems.append(Problem(entry.seq, "document_changed", detail))
    return problems


# ---- documents -------------------------------------------------------------------------


def document_sha256(text: str) -> bytes:
    """SHA-256 of the UTF-8 text with CRLF and CR made LF (the same on every platform)."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(normalized.encode("utf-8")).digest()


def template_placeholders(template: str) -> frozenset[str]:
    """The `{name}` placeholders of a template; `{{` and `}}` are literal braces.

    Refused: positional `{}`, attribute or index access, conversions and
    format specs, names not lower_snake_case, unbalanced braces.
    """
    if len(template) > TEMPLATE_CHARS_MAX:
        raise TemplateError(f"a template is at most {TEMPLATE_CHARS_MAX} characters")
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"template braces: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or _PLACEHOLDER_RE.match(name) is None:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise TemplateError(f"placeholder {{{shown}}} is not a plain {{lower_snake_case}} name")
        names.add(name)
    return frozenset(names)


def check_template(template: str, allowed: frozenset[str]) -> frozenset[str]:
    """The template's placeholders, all of them among `allowed` (e.g. CONTRACT_PLACEHOLDERS)."""
    names = template_placeholders(template)
    unknown = sorted(names - allowed)
    if unknown:
        raise TemplateError(f"unknown placeholders: {', '.join(unknown)}")
    return names


def render_contract(template: str, fields: Mapping[str, str]) -> str:
    """The template with every placeholder filled; a missing or an unused field is an error."""
    names = template_placeholders(template)
    missing = sorted(names - set(fields))
    unused = sorted(set(fields) - names)
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if unused:
            parts.append(f"not in the template: {', '.join(unused)}")
        raise TemplateError("contract fields do not fit the template (" + "; ".join(parts) + ")")
    for name, value in fields.items():
        if not isinstance(value, str):
            raise TemplateError(f"field {name} must be a string")
    return template.format_map(fields)


CONTRACT_PLACEHOLDERS: Final = frozenset(
    {
        "contract_id",
        "tenant_name",
        "product_name",
        "name_masked",
        "id_number_masked",
        "limit",
        "annual_rate_pct",
        "max_term_months",
        "repayment_methods",
        "date",
    }
)

LOAN_CONTRACT_TEMPLATE: Final = """\
个人网络借款合同（授信）

合同编号：{contract_id}
贷款人：{tenant_name}
借款人：{name_masked}（证件号码：{id_number_masked}）
产品：{product_name}

第一条 授信额度：人民币 {limit} 元，额度内可循环支用。
第二条 利率：年化利率 {annual_rate_pct}%（单利），按日计息。
第三条 期限：单笔借款期限最长 {max_term_months} 个月。
第四条 还款方式：{repayment_methods}。
第五条 借款人应按期足额还款；逾期的，贷款人按合同利率的1.5倍计收罚息。
第六条 借款人在线确认即视为签署本合同，与书面签字具有同等法律效力。

签署日期：{date}
"""

CREDIT_AUTHORIZATION_TEMPLATE: Final = """\
征信查询及报送授权书

编号：{contract_id}
授权人：{name_masked}（证件号码：{id_number_masked}）
被授权人：{tenant_name}

本人同意并授权被授权人在办理“{product_name}”业务审批及贷后管理时，向金融信用信息基础数据库\
查询本人的信用报告，并按规定报送本人的信用信息。授权期限自签署之日起至业务结清之日止。

授权日期：{date}
"""
