"""``wss://`` with the hardened context, against a real server on 127.0.0.1.

The certificate is made by the test. Each refused client is followed by a
legitimate one, which must still be served.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import make_token, welcome
from wsguard.adapters.websockets import serve
from wsguard.core.guard import Guard
from wsguard.exceptions import ConfigurationError
from wsguard.tls import make_self_signed, server_ssl_context

Cert = tuple[Path, Path]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def wss_url(guard_factory: Callable[..., Guard], cert: Cert) -> AsyncIterator[str]:
    context = server_ssl_context(str(cert[0]), str(cert[1]))
    async with serve(guard_factory(), "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"wss://127.0.0.1:{port}/ws"


def client_context(cert: Cert) -> ssl.SSLContext:
    """A client context that trusts the test certificate (and checks the hostname)."""
    context = ssl.create_default_context(cafile=str(cert[0]))
    return context


def old_client_context(cert: Cert, maximum: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    """A client that really offers old versions or weak suites (@SECLEVEL=0)."""
    context = client_context(cert)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated in ssl, on purpose here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    context.set_ciphers(ciphers)
    return context


def _connect(url: str, context: ssl.SSLContext, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(url, ssl=context, additional_headers=headers, open_timeout=5, close_timeout=2)


async def _served(url: str, context: ssl.SSLContext) -> str:
    """Connect, check the welcome, and return the negotiated TLS version."""
    async with _connect(url, context, make_token("legit")) as ws:
        info = await welcome(ws)
        assert info["protocol"] == "wsguard.v1"
        version: str = ws.transport.get_extra_info("ssl_object").version()
        return version


OLD_CLIENTS = {
    "TLS 1.1": (ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"),
    "TLS 1.2 CBC only": (
        ssl.TLSVersion.TLSv1_2,
        "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA:@SECLEVEL=0",
    ),
}


async def _refused(url: str, context: ssl.SSLContext) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with _connect(url, context, make_token("old-client")):
            pass


async def test_wss_client_is_served_over_tls13(wss_url: str, cert: Cert) -> None:
    assert await _served(wss_url, client_context(cert)) == "TLSv1.3"


@pytest.mark.parametrize("kind", sorted(OLD_CLIENTS))
async def test_old_clients_are_refused(wss_url: str, cert: Cert, kind: str) -> None:
    """TLS 1.1, or TLS 1.2 with only CBC (SHA-1 MAC) suites: the handshake fails."""
    await _refused(wss_url, old_client_context(cert, *OLD_CLIENTS[kind]))
    assert await _served(wss_url, client_context(cert)) == "TLSv1.3"


@pytest.mark.parametrize("kind", sorted(OLD_CLIENTS))
async def test_old_clients_really_offer_what_they_claim(cert: Cert, kind: str) -> None:
    """Control: a permissive server accepts the same clients, so the refusals are ours."""
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("ALL:@SECLEVEL=0")
    permissive.load_cert_chain(cert[0], cert[1])

    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", 0, ssl=permissive)
    async with server:
        port = server.sockets[0].getsockname()[1]
        maximum, _ = OLD_CLIENTS[kind]
        context = old_client_context(cert, *OLD_CLIENTS[kind])
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == (
            "TLSv1.1" if maximum == ssl.TLSVersion.TLSv1_1 else "TLSv1.2"
        )
        assert "GCM" not in ssl_object.cipher()[0]
        writer.close()
        await writer.wait_closed()


async def test_tls12_gcm_client_is_served(wss_url: str, cert: Cert) -> None:
    """TLS 1.2 with an ECDHE + AES-GCM suite is still accepted."""
    context = client_context(cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    async with _connect(wss_url, context, make_token("tls12")) as ws:
        await welcome(ws)
        ssl_object = ws.transport.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.2"
        assert ssl_object.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_context_settings(cert: Cert) -> None:
    context = server_ssl_context(str(cert[0]), str(cert[1]))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    for option in (
        ssl.OP_NO_COMPRESSION,
        ssl.OP_NO_RENEGOTIATION,
        ssl.OP_CIPHER_SERVER_PREFERENCE,
        ssl.OP_SINGLE_ECDH_USE,  # 0 on OpenSSL >= 1.1: always on there
    ):
        assert context.options & option == option
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["aead"], cipher["name"]
        assert cipher["kea"] == "kx-ecdhe", cipher["name"]
        assert "CBC" not in cipher["description"] and "SHA1" not in cipher["description"]
    assert {c["protocol"] for c in context.get_ciphers()} <= {"TLSv1.2", "TLSv1.3"}


def test_missing_cert_is_a_configuration_error(tmp_path: Path, cert: Cert) -> None:
    with pytest.raises(ConfigurationError) as info:
        server_ssl_context(str(tmp_path / "missing.pem"), str(cert[1]))
    assert info.value.setting == "tls.cert_file"


def test_missing_key_is_a_configuration_error(tmp_path: Path, cert: Cert) -> None:
    with pytest.raises(ConfigurationError) as info:
        server_ssl_context(str(cert[0]), str(tmp_path / "missing.pem"))
    assert info.value.setting == "tls.key_file"


def test_mismatched_key_is_a_configuration_error(tmp_path: Path, cert: Cert) -> None:
    _, other_key = make_self_signed(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        server_ssl_context(str(cert[0]), str(other_key))
    assert str(info.value) == "tls.key_file: does not match the certificate"


def test_garbage_files_are_configuration_errors(tmp_path: Path, cert: Cert) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem\n")
    with pytest.raises(ConfigurationError) as info:
        server_ssl_context(str(garbage), str(cert[1]))
    assert info.value.setting == "tls.cert_file"
    with pytest.raises(ConfigurationError) as info:
        server_ssl_context(str(cert[0]), str(garbage))
    assert info.value.setting == "tls.key_file"
