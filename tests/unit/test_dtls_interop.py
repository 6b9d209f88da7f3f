"""DTLS against an RSA-certificate peer, as GStreamer's DTLS element is.

Raspberry Ninja publishers (GStreamer ``webrtcbin``) use an RSA certificate.
aiortc 1.16 as DTLS client offers only ECDHE-ECDSA suites, so such a server
finds no shared cipher and the connection fails after ICE.  The adapter
(``ninja_publish.aiortc_adapter.install_interop``) appends ECDHE-RSA suites.  These tests run
real OpenSSL DTLS handshakes in memory between aiortc's own DTLS context
(our side) and a GStreamer-like context (RSA key, GStreamer's cipher string
and SRTP profile), in both roles, with stock aiortc as the control.
"""

from __future__ import annotations

import datetime

import pytest
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from ninja_publish import aiortc_adapter
from ninja_publish.aiortc_adapter.dtls import DTLS_CIPHERS

#: The cipher string GStreamer's DTLS agent sets (gst-plugins-bad, ext/dtls/gstdtlsagent.c).
GSTREAMER_CIPHERS = b"ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH"


def rsa_peer_context() -> SSL.Context:
    """A DTLS context like GStreamer's: RSA-2048 self-signed certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gstreamer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_cipher_list(GSTREAMER_CIPHERS)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    return ctx


def aiortc_context() -> SSL.Context:
    """The context aiortc's RTCDtlsTransport builds for a connection (ECDSA certificate)."""
    return RTCCertificate.generateCertificate()._create_ssl_context(srtp_profiles=[SRTP_AES128_CM_SHA1_80])


def handshake(client_ctx: SSL.Context, server_ctx: SSL.Context) -> tuple[SSL.Connection, SSL.Connection]:
    """Run a DTLS handshake over memory BIOs; raises SSL.Error when it fails."""
    client, server = SSL.Connection(client_ctx, None), SSL.Connection(server_ctx, None)
    client.set_connect_state()
    server.set_accept_state()
    done = {id(client): False, id(server): False}
    for _ in range(40):
        for this, other in ((client, server), (server, client)):
            if not done[id(this)]:
                try:
                    this.do_handshake()
                    done[id(this)] = True
                except SSL.WantReadError:
                    pass
            while True:
                try:
                    other.bio_write(this.bio_read(65536))
                except SSL.WantReadError:
                    break
        if all(done.values()):
            return client, server
    raise AssertionError("DTLS handshake did not finish")


@pytest.fixture
def stock_aiortc():
    aiortc_adapter.uninstall_dtls()
    yield
    aiortc_adapter.install_interop()


@pytest.fixture
def adapted_aiortc():
    aiortc_adapter.install_interop()
    yield


def test_stock_aiortc_client_fails_against_rsa_server(stock_aiortc):
    with pytest.raises(SSL.Error, match="(?i)no shared cipher|handshake failure"):
        handshake(aiortc_context(), rsa_peer_context())


def test_adapted_client_negotiates_ecdhe_rsa_with_rsa_server(adapted_aiortc):
    client, server = handshake(aiortc_context(), rsa_peer_context())
    assert client.get_cipher_name().startswith("ECDHE-RSA-"), client.get_cipher_name()
    assert client.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80"
    assert server.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80"


def test_adapted_server_serves_rsa_client_with_ecdsa(adapted_aiortc):
    client, server = handshake(rsa_peer_context(), aiortc_context())
    assert server.get_cipher_name().startswith("ECDHE-ECDSA-"), server.get_cipher_name()
    assert client.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80"


def test_ecdsa_stays_preferred_between_aiortc_peers(adapted_aiortc):
    client, _ = handshake(aiortc_context(), aiortc_context())
    assert client.get_cipher_name().startswith("ECDHE-ECDSA-"), client.get_cipher_name()


def test_install_is_idempotent_and_keeps_ecdsa_first(adapted_aiortc):
    aiortc_adapter.install_interop()
    aiortc_adapter.install_interop()
    suites = DTLS_CIPHERS.split(b":")
    first_rsa = next(i for i, s in enumerate(suites) if s.startswith(b"ECDHE-RSA"))
    assert all(s.startswith(b"ECDHE-ECDSA") for s in suites[:first_rsa])
    client, _ = handshake(aiortc_context(), rsa_peer_context())
    assert client.get_cipher_name().startswith("ECDHE-RSA-")
