"""Framework-neutral web rules: the server's own origins, cookies read strictly, and
who may read ``/metrics``.

Nothing here looks at a request object: callers pass the raw header values, so
the auth server and every framework adapter apply the same rules.

* **Own origin.** It comes from configuration (``GATEPASS_PUBLIC_URL``, else the
  issuer), never from ``Host``: a DNS-rebinding page names itself in both ``Host``
  and ``Origin``, so trusting ``Host`` would trust the attacker.
* **Ambiguous cookies.** A cookie set from a sibling domain (cookie tossing) arrives
  next to the real one under the same name; which one a framework keeps is an
  accident of parsing, so two values count as no valid value at all.
"""

from __future__ import annotations

import ipaddress

from gatepass._compare import constant_time_equals
from gatepass.config import Settings, origin_of
from gatepass.errors import AuthenticationFailed, PermissionDenied

#: Every spelling of the loopback host a browser may put in an ``Origin``.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Addresses that listen on every interface (named here to warn, not to bind).
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})  # noqa: S104
_BEARER = "bearer "


class AmbiguousCookie(ValueError):
    """A request carried the same cookie name more than once."""


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


def _loopback_spellings(origin: str) -> set[str]:
    scheme, _, rest = origin.partition("://")
    host, port = rest, ""
    if rest.startswith("["):
        end = rest.index("]") + 1
        host, port = rest[:end], rest[end:]
    elif ":" in rest:
        host, _, number = rest.partition(":")
        port = f":{number}"
    if not is_loopback_host(host):
        return set()
    return {f"{scheme}://{name}{port}" for name in LOOPBACK_HOSTS}


def own_origins(settings: Settings) -> frozenset[str]:
    """The server's own origins, from configuration alone.

    The public URL's origin and a configured issuer's (when it is a URL); when such
    a host is a loopback address or ``localhost``, every loopback spelling of it
    with the same scheme and port.
    """
    found: set[str] = set()
    urls = [settings.effective_public_url]
    if settings.issuer is not None:  # the derived http://HOST:PORT is no one's choice
        urls.append(settings.issuer)
    for url in urls:
        try:
            origin = origin_of(url)
        except ValueError:  # an issuer need not be a URL
            continue
        found.add(origin)
        found |= _loopback_spellings(origin)
    return frozenset(found)


def trusted_origins(settings: Settings) -> frozenset[str]:
    """Origins an ``Origin`` header may name: the own ones and ``GATEPASS_ALLOWED_ORIGINS``."""
    return own_origins(settings) | frozenset(settings.allowed_origins)


def wildcard_bind_warning(settings: Settings) -> str | None:
    """A warning when the server listens on every address but its own origin is
    only the guessed ``http://HOST:PORT``, which no browser will send."""
    if settings.host.lower() not in WILDCARD_HOSTS:
        return None
    if settings.issuer is not None or settings.public_url is not None:
        return None
    return (
        f"listening on {settings.host} without GATEPASS_PUBLIC_URL or GATEPASS_ISSUER: "
        f"the own origin is taken to be {settings.effective_public_url}, so browsers' "
        "requests naming another origin are refused; set GATEPASS_PUBLIC_URL to the "
        "URL clients use"
    )


def cookie_values(header: str | None, name: str) -> list[str]:
    """Every value a raw ``Cookie`` header gives the cookie ``name``, in order."""
    if not header:
        return []
    values: list[str] = []
    for chunk in header.split(";"):
        key, sep, value = chunk.partition("=")
        if sep and key.strip() == name:
            values.append(value.strip())
    return values


def cookie_value(header: str | None, name: str) -> str | None:
    """The one value of cookie ``name``; :class:`AmbiguousCookie` when there are more."""
    values = cookie_values(header, name)
    if len(values) > 1:
        raise AmbiguousCookie(name)
    return values[0] if values else None


def check_metrics_access(
    settings: Settings, authorization: str | None, client_address: str | None
) -> None:
    """Who may read ``/metrics``.

    With ``GATEPASS_METRICS_TOKEN``: exactly ``Authorization: Bearer <token>``
    (:class:`AuthenticationFailed` otherwise), from any address. Without it: a
    client whose address (after trusted proxies) is loopback
    (:class:`PermissionDenied` otherwise).
    """
    if settings.metrics_token is not None:
        expected = settings.metrics_token.get_secret_value()
        if authorization is None:
            raise AuthenticationFailed("Metrics need a bearer token.")
        presented = ""
        if authorization[: len(_BEARER)].lower() == _BEARER:
            presented = authorization[len(_BEARER) :].strip()
        if not constant_time_equals(expected, presented):
            raise AuthenticationFailed("Invalid metrics token.", token_sent=True)
        return
    if not is_loopback_address(client_address):
        raise PermissionDenied("Metrics are served to loopback clients only.")
