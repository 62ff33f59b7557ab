"""A hardened server-side TLS context for ``wss://``.

:func:`server_ssl_context` builds the :class:`ssl.SSLContext` that
``wsguard serve --tls-cert FILE --tls-key FILE`` hands to ``websockets``:
TLS 1.2 minimum, TLS 1.3 whenever the client has it, and on TLS 1.2 only
AEAD cipher suites with an ephemeral ECDHE key exchange. ``docs/tls.md``
lists every setting and why.

:func:`make_self_signed` writes a short-lived certificate for tests and local
development; it needs the ``cryptography`` package (a dependency of
``PyJWT[crypto]``), imported only when called.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path
from typing import NoReturn

from wsguard.exceptions import ConfigurationError

# TLS 1.2 only: ephemeral ECDHE key exchange (forward secrecy) with an AEAD
# cipher. The exclusions are belt and braces should OpenSSL's aliases widen.
# TLS 1.3 suites are not affected by this string; all of them are AEAD with
# (EC)DHE already.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!CBC:!PSK:!SRP:!DSS"

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

OPTIONS = (
    ssl.OP_NO_COMPRESSION  # CRIME
    | ssl.OP_NO_RENEGOTIATION  # client-initiated renegotiation DoS (TLS 1.2)
    | ssl.OP_CIPHER_SERVER_PREFERENCE  # our order, not the client's
    | ssl.OP_SINGLE_ECDH_USE  # a fresh ECDH key per handshake
)


def server_ssl_context(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
) -> ssl.SSLContext:
    """A server context with wsguard's hardened settings, loaded with a cert and key.

    Args:
        cert_file: PEM certificate chain, leaf first.
        key_file: PEM private key of the leaf certificate, not encrypted.

    Returns:
        A context for ``websockets``' ``ssl=`` argument.

    Raises:
        ConfigurationError: naming ``tls.cert_file`` or ``tls.key_file`` when a
            file is missing or unreadable, is not PEM, or the key does not
            match the certificate.
    """
    _check_readable("tls.cert_file", cert_file)
    _check_readable("tls.key_file", key_file)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= OPTIONS
    ctx.verify_mode = ssl.CERT_NONE  # no client certificates
    ctx.check_hostname = False  # a client-side setting; explicit for clarity

    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except ConfigurationError:
        raise
    except OSError as exc:  # ssl.SSLError is an OSError too
        _raise_load_error(cert_file, exc)
    return ctx


def _check_readable(setting: str, path: str | os.PathLike[str]) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigurationError(
            setting, f"cannot read {os.fspath(path)!r}: {exc.strerror}"
        ) from None


def _no_password() -> NoReturn:
    # Without a callback OpenSSL would prompt on the terminal for a passphrase.
    raise ConfigurationError("tls.key_file", "encrypted private keys are not supported")


def _raise_load_error(cert_file: str | os.PathLike[str], exc: OSError) -> NoReturn:
    """Turn what ``load_cert_chain`` raised into a one-line ConfigurationError."""
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        raise ConfigurationError("tls.key_file", "does not match the certificate") from None
    # Tell a bad certificate from a bad key by loading the certificate alone.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert_file)
    except (OSError, ValueError):
        raise ConfigurationError("tls.cert_file", "not a PEM certificate") from None
    raise ConfigurationError("tls.key_file", "not a PEM private key") from None


def make_self_signed(dir: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write a self-signed certificate and its key, for tests and development only.

    The key is EC P-256; the certificate is valid for one day and names
    ``host``, ``127.0.0.1`` and ``localhost`` in its subjectAltName.

    Args:
        dir: an existing directory; ``cert.pem`` and ``key.pem`` are written there.
        host: the certificate's common name, and a SAN entry too (IP or DNS).

    Returns:
        ``(cert_path, key_path)``; the key file is owner-only (0600).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if extra not in sans:
        sans.append(extra)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = dir / "cert.pem"
    key_path = dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    return cert_path, key_path


__all__ = ["MINIMUM_VERSION", "OPTIONS", "TLS12_CIPHERS", "make_self_signed", "server_ssl_context"]
