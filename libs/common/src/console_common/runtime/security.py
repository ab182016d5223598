"""The RFB security proxy's policy from a proxy's configuration, with one-line errors.

    policy = security_policy(config, "novncproxy")   # None: auth_schemes is just none

A setting that cannot work (vencrypt without vencrypt_ca_certs, a client certificate
without its key, an unreadable file) stops the service with
``PROG: error: option NAME: ... (from SOURCE)``, exit 2.
"""

from __future__ import annotations

import sys
from typing import Any

from console_common.net.rfbsecurity import SecurityPolicy

OPTIONS = ("auth_schemes", "vencrypt_ca_certs", "vencrypt_client_cert", "vencrypt_client_key")


def security_policy(config: Any, prog: str) -> SecurityPolicy | None:
    try:
        policy = SecurityPolicy.build(config.auth_schemes, config.vencrypt_ca_certs,
                                      config.vencrypt_client_cert, config.vencrypt_client_key)
    except ValueError as exc:
        message, option = exc.args
        print(f"{prog}: error: option {option}: {message} "
              f"(from {config.source_of(option)})", file=sys.stderr)
        raise SystemExit(2) from None
    return policy if policy.active else None
