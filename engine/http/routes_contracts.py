"""Contract endpoints: the one-time code and the signature (channels), the read-back
(channels and operators), the face-to-face record (operators, `X-Operator-Token`)."""

from __future__ import annotations

import logging

from aiohttp import web

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import ApiError, ServiceUnavailable
from engine.contract.messages import ContractSign, FaceToFaceCreate, OtpIssued
from engine.http import keys as app_keys
from engine.http.admin_context import acting_operator
from engine.http.auth import BODY, CHANNEL
from engine.origination import face_to_face, otp, signing
from engine.origination.contract_view import contract_view
from engine.services.context import Services, parse_id
from engine.stores.shards import in_transaction, read
from sharding.ids import shard_of_id

log = logging.getLogger(__name__)


def _svc(request: web.Request) -> Services:
    return request.app[app_keys.SERVICES]


def _contract_id(request: web.Request) -> int:
    return parse_id(request.match_info["contract_id"], "contract")


async def issue_otp(request: web.Request) -> web.Response:
    """A new code by SMS to the customer's phone; the answer never holds the code."""
    svc, channel, contract_id = _svc(request), request[CHANNEL], _contract_id(request)
    policy = request.app[app_keys.ORIGINATION].otp
    shard = shard_of_id(contract_id)
    to_send = await in_transaction(
        svc.pools,
        shard,
        lambda c: signing.issue_code(
            c,
            svc.cipher,
            svc.reference.data,
            policy=policy,
            channel=channel,
            contract_id=contract_id,
        ),
    )
    sent = await request.app[app_keys.SMS].send(to_send.reference, to_send.phone, to_send.text)
    if not sent:
        await in_transaction(
            svc.pools, shard, lambda c: otp.void(c, contract_id, to_send.issued.issue_no)
        )
        log.warning("signing code not sent", extra={"sms_reference": to_send.reference})
        raise ServiceUnavailable(
            "SMS_UNAVAILABLE",
            "the SMS gateway did not take the code; no code is live, ask again shortly",
            headers={"Retry-After": "5"},
        )
    issued = to_send.issued
    view = OtpIssued(
        contract_id=str(contract_id),
        phone_masked=to_send.phone_masked,
        expires_at=issued.expires_at,
        resend_after_s=policy.resend_s,
        attempts_left=issued.attempts_left,
        sms_reference=to_send.reference,
    )
    return json_response(encode(view))


async def sign_contract(request: web.Request) -> web.Response:
    svc, channel, contract_id = _svc(request), request[CHANNEL], _contract_id(request)
    policy = request.app[app_keys.ORIGINATION].otp
    signer = signing.signer_of(request.headers)
    body = decode(request[BODY], ContractSign)
    result = await in_transaction(
        svc.pools,
        shard_of_id(contract_id),
        lambda c: signing.sign(
            c,
            svc.cipher,
            svc.reference.data,
            policy=policy,
            channel=channel,
            contract_id=contract_id,
            body=body,
            signer=signer,
        ),
    )
    if isinstance(result, ApiError):
        raise result  # a wrong code: its count is committed, the refusal answered now
    return json_response(encode(result))


async def get_contract(request: web.Request) -> web.Response:
    """The channel reads its own tenant's contracts; an operator (no CHANNEL) those of
    its member bank, or any (the union's)."""
    svc, contract_id = _svc(request), _contract_id(request)
    channel = request.get(CHANNEL)
    tenant_id = acting_operator(request).scope if channel is None else channel.tenant_id
    view = await read(
        svc.pools, shard_of_id(contract_id), lambda c: contract_view(c, contract_id, tenant_id)
    )
    return json_response(encode(view))


async def record_face_to_face(request: web.Request) -> web.Response:
    svc, contract_id = _svc(request), _contract_id(request)
    body = decode(request[BODY], FaceToFaceCreate)
    scope = acting_operator(request).scope
    view = await in_transaction(
        svc.pools,
        shard_of_id(contract_id),
        lambda c: face_to_face.record(c, contract_id, body, scope),
    )
    return json_response(encode(view))


def setup_contract_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/v1/contracts/{contract_id}/otp", issue_otp)
    add("POST", "/v1/contracts/{contract_id}/sign", sign_contract)
    add("GET", "/v1/contracts/{contract_id}", get_contract)
    add("POST", "/v1/contracts/{contract_id}/face-to-face", record_face_to_face)
