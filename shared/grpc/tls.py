"""Transport security on a Qiji port: TLS from the configured certificate (re-read when its
files change, so a renewed certificate needs no restart), client certificates required and
verified where a client CA is configured, and the names a verified client certificate carries,
for the guard to map to a principal."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.config import ConfigError, Settings, TlsSettings

log = structlog.get_logger(__name__)


def read_pem(path: Path, setting: str) -> bytes:
    """A PEM file's bytes, or a ConfigError that names the setting and says what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting} {path}: cannot be read ({error.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{setting} {path}: not a PEM file")
    return data


def read_certificates(path: Path, setting: str) -> bytes:
    data = read_pem(path, setting)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise ConfigError(f"{setting} {path}: no readable certificate ({error})") from None
    return data


def read_key_pair(cert_file: Path, key_file: Path, cert_setting: str, key_setting: str
                  ) -> tuple[bytes, bytes]:
    """(key, certificate chain) as grpcio wants them, checked to belong together: a mismatch
    would otherwise start a server whose every handshake fails."""
    chain = read_certificates(cert_file, cert_setting)
    key_pem = read_pem(key_file, key_setting)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{key_setting} {key_file}: not an unencrypted private key "
                          f"({error})") from None
    leaf = x509.load_pem_x509_certificates(chain)[0]
    if _public(leaf.public_key()) != _public(key.public_key()):
        raise ConfigError(f"{key_setting} {key_file} is not the key of the certificate in "
                          f"{cert_setting} {cert_file}")
    return key_pem, chain


def _public(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class _CertificateFiles:
    """The server's certificate configuration, read again when one of its files changes. A
    file caught half-written (or replaced by something unusable) keeps the last good one."""

    def __init__(self, tls: TlsSettings):
        assert tls.cert_file is not None and tls.key_file is not None
        self._tls = tls
        self._files = [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p]
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.initial = self._configuration()

    def _stat(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._files:
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, -1))
        return tuple(stamps)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        tls = self._tls
        pair = read_key_pair(tls.cert_file, tls.key_file,  # type: ignore[arg-type]
                             "TLS_CERT_FILE", "TLS_KEY_FILE")
        roots = (read_certificates(tls.client_ca_file, "TLS_CLIENT_CA_FILE")
                 if tls.client_ca_file else None)
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpcio before every new connection's handshake: a new configuration when
        the files changed, else None (keep the current one)."""
        stamp = self._stat()
        with self._lock:
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                configuration = self._configuration()
            except ConfigError as error:
                log.warning("tls.reload_failed", error=str(error))
                return None
        log.info("tls.reloaded", cert_file=str(self._tls.cert_file))
        return configuration


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    files = _CertificateFiles(tls)
    return grpc.dynamic_ssl_server_credentials(
        # grpc takes None from fetch as "unchanged" (its documentation); the stub says never.
        files.initial, files.fetch,  # type: ignore[arg-type]
        require_client_authentication=tls.requires_client_certificates)


def add_port(server: grpc.Server, settings: Settings) -> int:
    """Binds the service's port: TLS only when a certificate is configured (no plaintext
    beside it), plaintext otherwise. Returns the port bound."""
    address = settings.address
    if settings.tls.serves_tls:
        port = server.add_secure_port(address, server_credentials(settings.tls))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    log.info("grpc.port", address=address, tls=settings.tls.serves_tls,
             shared=settings.grpc_share_port,
             client_certificates="required" if settings.tls.requires_client_certificates
             else "none")
    return port


def certificate_names(context: grpc.ServicerContext) -> frozenset[str]:
    """The names in the caller's client certificate (common name and subject alternative
    names), which grpcio only reports once the certificate verified against the client CA;
    empty for a caller without one."""
    auth = context.auth_context()
    names = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return frozenset(n.decode() if isinstance(n, bytes) else str(n) for n in names)
