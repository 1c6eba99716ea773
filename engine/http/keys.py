"""Typed application storage: every `web.AppKey` of the engine, in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from engine.adapters.bureau import BureauClient, FourFactorClient
from engine.adapters.sms import SmsClient
from engine.origination.service import Origination
from engine.relay.executor import Relay
from engine.security.pii import PiiCipher
from engine.services.context import Services
from engine.settings import Settings
from engine.stores.channel_gate import ChannelGate
from engine.stores.redis_wire import RedisWire
from engine.stores.reference import ReferenceCache
from sharding.ids import IdGenerator
from sharding.pools import ShardPools

SETTINGS = web.AppKey("settings", Settings)
SHARD_POOLS = web.AppKey("shard_pools", ShardPools)
CONTROL_POOL = web.AppKey("control_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", RedisWire)
GATE = web.AppKey("gate", ChannelGate)
IDS = web.AppKey("ids", IdGenerator)
PII = web.AppKey("pii", PiiCipher)
REFERENCE = web.AppKey("reference", ReferenceCache)
SERVICES = web.AppKey("services", Services)
INLINE_RELAY = web.AppKey("inline_relay", Relay)
ORIGINATION = web.AppKey("origination", Origination)
BUREAU = web.AppKey("bureau", BureauClient)
VERIFIER = web.AppKey("verifier", FourFactorClient)
SMS = web.AppKey("sms", SmsClient)
