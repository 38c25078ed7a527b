"""The proxy CA bundle: several PEM files checked on the controller, combined into the one
`ca-bundle.crt` the guide names, before any Mac is touched."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from fleetctl.errors import UsageError


def bundle(paths: list[str], where: str) -> str:
    """The combined PEM text of PATHS; a missing, non-PEM or expired certificate is refused."""
    from cryptography import x509  # paramiko's own dependency; imported only when a playbook names CA files

    now = datetime.now(timezone.utc)
    parts = []
    for raw in paths:
        path = Path(os.path.expanduser(raw))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UsageError(f"{where}: proxy_ca_bundle: {e.strerror}: {raw}") from None
        try:
            found = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise UsageError(f"{where}: proxy_ca_bundle: {raw} is not PEM certificates "
                             "(-----BEGIN CERTIFICATE----- blocks)") from None
        for cert in found:
            if cert.not_valid_after_utc < now:
                raise UsageError(f"{where}: proxy_ca_bundle: {raw}: certificate {cert.subject.rfc4514_string()!r} "
                                 f"expired on {cert.not_valid_after_utc:%Y-%m-%d}; replace it")
        parts.append(data.decode("ascii", "replace").strip() + "\n")
    return "".join(parts)
