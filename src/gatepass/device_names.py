"""Human names for the devices behind sessions ("Chrome 156 on Linux").

A user agent is whatever the client chose to send, so it is treated as hostile:
only its first :data:`MAX_USER_AGENT_LENGTH` characters are parsed (ua-parser runs
hundreds of regular expressions over the string, and a long one costs time on
every page view), the results are cached in a bounded cache, the name keeps
printable characters only, and nothing here raises.
"""

from __future__ import annotations

from functools import lru_cache

import ua_parser

UNKNOWN_DEVICE = "Unknown device"
#: Real user agents are a few hundred characters; sessions store at most 512.
MAX_USER_AGENT_LENGTH = 512
#: Distinct agents remembered; a user has a handful, an attacker may send millions.
CACHE_SIZE = 1024
#: A name is shown in a table cell; no browser or system needs more.
MAX_NAME_LENGTH = 64

# Names as people know them; ua-parser's family names are more technical.
_BROWSERS = {
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome WebView",
    "HeadlessChrome": "Headless Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
}
# Safari's version follows the system's, so it says little about the device.
_VERSIONLESS = frozenset({"Safari"})
_SYSTEMS = {"Mac OS X": "macOS", "Chrome OS": "ChromeOS"}


def device_name(user_agent: str | None) -> str:
    """A short name for the device that sent ``user_agent``, or ``"Unknown device"``."""
    if not user_agent:
        return UNKNOWN_DEVICE
    return _cached_name(user_agent[:MAX_USER_AGENT_LENGTH])


@lru_cache(maxsize=CACHE_SIZE)
def _cached_name(user_agent: str) -> str:
    try:
        result = ua_parser.parse(user_agent)
    except Exception:  # a name is cosmetic: never fail a page for it
        return UNKNOWN_DEVICE
    browser = system = None
    if result.user_agent is not None and result.user_agent.family != "Other":
        family = _BROWSERS.get(result.user_agent.family, result.user_agent.family)
        major = result.user_agent.major
        # ASCII digits only: "Chrome ١٥٦" would pass for a version nobody ships.
        if family in _VERSIONLESS or not major or not (major.isascii() and major.isdigit()):
            browser = family
        else:
            browser = f"{family} {major}"
    if result.os is not None and result.os.family != "Other":
        system = _SYSTEMS.get(result.os.family, result.os.family)
    if browser and system:
        name = f"{browser} on {system}"
    elif browser:
        name = browser
    elif system:
        name = f"Unknown browser on {system}"
    else:
        return UNKNOWN_DEVICE
    # Families and versions are pieces of the sent string: keep them displayable.
    cleaned = "".join(c for c in name if c.isprintable()).strip()[:MAX_NAME_LENGTH]
    return cleaned or UNKNOWN_DEVICE
