"""Issue 21, item 9: with a certificate configured the channel API speaks TLS only
(the operations listener stays on its internal address, plain)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api_client import ApiClient
from tests.conftest import EngineProcess, Fakes


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_engine(fakes: Fakes, tmp_path: Path) -> Iterator[tuple[EngineProcess, ssl.SSLContext]]:
    cert, key = _self_signed(tmp_path)
    proc = EngineProcess(
        fakes,
        workers=1,
        relay=False,
        extra_env={"ENGINE_TLS_CERT_FILE": str(cert), "ENGINE_TLS_KEY_FILE": str(key)},
    )
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        proc.wait_for(f"{proc.ops_url}/healthz")  # the ops listener opens after the API
        yield proc, trust
    finally:
        proc.stop()


async def test_the_api_is_served_over_tls_only(
    tls_engine: tuple[EngineProcess, ssl.SSLContext],
) -> None:
    engine, trust = tls_engine
    https = engine.base_url.replace("http://", "https://")
    connector = aiohttp.TCPConnector(ssl=trust)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{https}/healthz") as resp:
            assert resp.status == 200
        api = ApiClient(session, https)
        customer_id = await api.customer()
        assert (await api.get(f"/v1/customers/{customer_id}/loans")).status == 200
        async with session.get(f"{engine.ops_url}/readyz") as resp:
            assert resp.status == 200  # internal and plain
    started = time.monotonic()
    async with aiohttp.ClientSession() as plain:
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
            async with plain.get(
                f"{engine.base_url}/healthz", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                await resp.read()
    assert time.monotonic() - started < 5.5
