"""E-mail addresses in one normal form: the key for uniqueness and for the login lockout.

Two spellings of one mailbox must be one account, so an address is validated and
reduced to a single form before it is stored or looked up:

* the local part (before ``@``) is NFKC-normalised and case-folded, at most 64
  octets of UTF-8 (RFC 5321 4.5.3.1.1), so full-width ``victim`` (U+FF56...),
  ``Victim`` and ``victim`` are one mailbox;
* the domain is its IDNA A-label under UTS #46, so a full-width ``example.com``
  is ``example.com`` and ``bücher.de`` is ``xn--bcher-kva.de``;
* the whole is at most 254 octets (RFC 5321 4.5.3.1.3 less the angle brackets).

Syntax and IDNA are checked by email-validator, without any DNS look-up. Error
messages name the rule that failed and never repeat the address: they reach logs
and clients.
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

MAX_LOCAL_PART_OCTETS = 64
MAX_EMAIL_OCTETS = 254
#: Longer input cannot shrink to a valid address; refusing it early bounds the work.
_MAX_INPUT_CHARACTERS = 4 * MAX_EMAIL_OCTETS
#: Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned,
#: and every space or separator other than what ``str.strip`` removes at the ends.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


class InvalidEmail(ValueError):
    """The text is not an acceptable e-mail address. The message never contains it."""


def _fold_local_part(local: str) -> str:
    # NFKC, case fold, NFKC again: folding can leave text that is no longer in
    # NFKC (Unicode's NFKC_Casefold is defined the same way), and the key must be
    # stable when it is normalised again.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", local).casefold())


def _validated(address: str) -> tuple[str, str]:
    """(local part, A-label domain) of ``address`` as email-validator accepts it."""
    try:
        result = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
        )
    except EmailNotValidError as exc:
        # email-validator's messages quote the offending characters: never pass them
        # on. Only which of our fixed messages to give is read from them.
        if "too long" in str(exc):
            raise InvalidEmail(f"email must be at most {MAX_EMAIL_OCTETS} octets") from None
        raise InvalidEmail("email is not a valid e-mail address") from None
    return result.local_part, result.ascii_domain


def normalise_email(raw: str) -> str:
    """The normal form of the address ``raw``, or :class:`InvalidEmail` if it is none.

    Surrounding white space is ignored. Equivalent spellings (case, full-width or
    other compatibility characters, U-label or A-label domains) give the same result.
    """
    if not isinstance(raw, str):
        raise InvalidEmail("email must be text")
    text = raw.strip()
    if not text:
        raise InvalidEmail("email must not be empty")
    if len(text) > _MAX_INPUT_CHARACTERS:
        raise InvalidEmail(f"email must be at most {MAX_EMAIL_OCTETS} octets")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text):
        raise InvalidEmail("email contains invalid characters (control, format or space)")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmail("email is not a valid e-mail address")
    folded = _fold_local_part(local)
    if len(folded.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        raise InvalidEmail(
            f"email: the part before @ must be at most {MAX_LOCAL_PART_OCTETS} octets"
        )
    # Validate what will be stored, not only what was typed: NFKC can turn a
    # full-width at sign or full stop (U+FF20, U+FF0E) into characters that break the syntax.
    local_part, ascii_domain = _validated(f"{folded}@{domain}")
    normal = f"{local_part}@{ascii_domain}"
    if local_part != folded or _fold_local_part(local_part) != local_part:
        raise InvalidEmail("email is not a valid e-mail address")
    if len(normal.encode("utf-8")) > MAX_EMAIL_OCTETS:
        raise InvalidEmail(f"email must be at most {MAX_EMAIL_OCTETS} octets")
    return normal
