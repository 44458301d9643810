"""The one way a Qiji process (a follower, the gateway, the relay, the `qiji` command) opens a
channel to a Qiji service: TLS when `TLS_CA_FILE` names the roots that sign the servers'
certificates, presenting `TLS_CLIENT_CERT_FILE` where a server requires a client certificate;
plaintext otherwise, as on the embedded default."""

from __future__ import annotations

import grpc

from shared.config import Settings, TlsSettings
from shared.grpc.tls import read_certificates, read_key_pair

# grpcio's default reconnect back-off grows to 120 s: a server back after a restart could wait
# that long for our followers, gateway and relay to dial again (the relay showed itself unhealthy
# for 30 s after an upstream came back). Qiji's servers are few and near: retry within a second
# (a feed read a request waits on waits that long for a restarted upstream, shared/followers.py
# REDIAL_SECONDS, rather than tell the request it cannot be reached).
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
             ("grpc.max_reconnect_backoff_ms", 1000)]


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    """The credentials to dial with, read (and checked) from the files now; None: plaintext."""
    if tls.ca_file is None:
        return None
    roots = read_certificates(tls.ca_file, "TLS_CA_FILE")
    key = chain = None
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        key, chain = read_key_pair(tls.client_cert_file, tls.client_key_file,
                                   "TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE")
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key,
                                        certificate_chain=chain)


def open_channel(address: str, settings: Settings | TlsSettings | None) -> grpc.Channel:
    """A channel to `address` ("host:port"), secured as `settings` say. The host dialled must
    be a name (or IP address) in the server's certificate."""
    tls = settings.tls if isinstance(settings, Settings) else (settings or TlsSettings())
    credentials = channel_credentials(tls)
    if credentials is None:
        return grpc.insecure_channel(address, options=RECONNECT)
    return grpc.secure_channel(address, credentials, options=RECONNECT)
