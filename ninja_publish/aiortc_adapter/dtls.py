"""DTLS cipher suites that RSA-certificate peers (GStreamer) accept.

aiortc 1.16 as DTLS client offers only ECDHE-ECDSA suites; a DTLS server with
an RSA certificate (GStreamer's ``dtlsdec``, i.e. every Raspberry Ninja
publisher) then finds no shared cipher and the connection fails after ICE.
ECDHE-RSA suites are appended after the ECDSA ones, so ECDSA stays
preferred (browsers) and our own certificate stays ECDSA.
"""

from __future__ import annotations

from typing import Any, Callable

from aiortc.rtcdtlstransport import RTCCertificate

from ninja_publish.aiortc_adapter.patching import Patch

#: aiortc's own suites first (ECDSA: our certificate), then those an RSA-certificate
#: DTLS server such as GStreamer's can choose (OpenSSL names).
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
    b":ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)


def _with_rsa_suites(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_ssl_context(self: RTCCertificate, *args: Any, **kwargs: Any) -> Any:
        ctx = original(self, *args, **kwargs)
        ctx.set_cipher_list(DTLS_CIPHERS)
        return ctx

    return create_ssl_context


PATCHES = [Patch(RTCCertificate, "_create_ssl_context", _with_rsa_suites)]
