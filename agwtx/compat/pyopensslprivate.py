"""
Every private pyOpenSSL name agw uses (see L{agwtx.compat}).

pyOpenSSL 25.2 added C{Context.set_tls13_ciphersuites}; agw's floor is
25.1 (setup.cfg), which has no public way to choose TLS 1.3 suites.  Azure's
TLS policies name exactly two TLS 1.3 suites (the AES-GCM pair), so on 25.1
agw calls OpenSSL's C{SSL_CTX_set_ciphersuites} through pyOpenSSL's cffi
binding and the context's handle, both private.
"""

from __future__ import annotations

from typing import Any

from agwtx.compat import Private

__all__ = ["ITEMS", "setTls13Suites"]


def setTls13Suites(ctx: Any, suites: bytes) -> None:
    """C{ctx.set_tls13_ciphersuites(suites)} where pyOpenSSL has it (25.2 on), else the same OpenSSL call."""
    setter = getattr(ctx, "set_tls13_ciphersuites", None)
    if setter is not None:
        setter(suites)
        return
    from OpenSSL._util import lib

    lib.SSL_CTX_set_ciphersuites(ctx._context, suites)


ITEMS = (
    Private(
        "OpenSSL",
        "_util",
        "module",
        "agwtx.config.sslpolicy (setTls13Suites)",
        "its cffi binding (lib.SSL_CTX_set_ciphersuites) sets the TLS 1.3 suites of Azure's "
        "policies on pyOpenSSL before 25.2, which has no public call for it",
    ),
    Private(
        "OpenSSL.SSL:Context",
        "_context",
        "attribute",
        "agwtx.config.sslpolicy (setTls13Suites)",
        "the SSL_CTX handle that call takes",
    ),
)
