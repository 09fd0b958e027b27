"""Loopback addresses and hosts, by one rule for the server and the verifier.

Standard library only: :mod:`gatepass.verifier` uses it too.
"""

from __future__ import annotations

import ipaddress


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback_address(address: str | None) -> bool:
    """``True`` for 127.0.0.0/8, ``::1`` and ``::ffff:127.x``; ``False`` for anything
    that is not an IP address (a test client's made-up peer name included)."""
    ip = _ip(address) if address else None
    return ip is not None and ip.is_loopback


def is_loopback_host(host: str) -> bool:
    """A URL host (``localhost`` or a loopback IP literal) that names this machine."""
    return host.lower().rstrip(".") == "localhost" or is_loopback_address(host)
