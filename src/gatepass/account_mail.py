"""The mail account flows send: links (verification, reset, address change) and
notices, each within the per-address limit.

A link is stored (hashed, :mod:`gatepass.links`) only when its mail will be sent,
and the mail is handed to a background sender (:class:`gatepass.mail.Mailer`), so
no request waits for SMTP. Over the per-address limit nothing is stored or sent,
and the caller answers exactly as if it had been: the limit is invisible from
outside (counted as ``gatepass_mails{result="suppressed"}``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from gatepass.clock import Clock
from gatepass.errors import GatepassError
from gatepass.links import LinkPurpose, describe_seconds, link_url, new_link_token, token_digest
from gatepass.metrics import Metrics
from gatepass.ratelimit import RequestLimits
from gatepass.stores.base import LinkRecord, LinkStore

logger = logging.getLogger("gatepass.mail")

#: How long closing waits for account mail work still running.
SETTLE_SECONDS = 10.0
#: Work that depends on the address starts this long after the request handed it
#: over: by then the answer has been written, so the work (a store write, rendering
#: the mail) cannot delay it.
DEFER_SECONDS = 0.05

#: Template names (gatepass/mail_templates/; see docs/mail.md for their context).
VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 - a template name
EMAIL_CHANGE = "email_change"
EMAIL_CHANGED = "email_changed"
SIGNUP_EXISTING = "signup_existing"
EMAIL_CHANGE_EXISTING = "email_change_existing"


class MailSender(Protocol):
    """Takes a mail to send later; never blocks, never raises for delivery."""

    def submit(self, to: str, template: str, context: Mapping[str, str]) -> None: ...


class AccountMail:
    """Mail of the account flows, over ``sender``, within ``limits``."""

    def __init__(
        self,
        links: LinkStore,
        sender: MailSender,
        limits: RequestLimits,
        metrics: Metrics,
        clock: Clock,
        *,
        public_url: str,
        verify_ttl: int,
        reset_ttl: int,
    ) -> None:
        self._links = links
        self._sender = sender
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._public_url = public_url
        self._ttl = {
            LinkPurpose.VERIFY_EMAIL: verify_ttl,
            LinkPurpose.CHANGE_EMAIL: verify_ttl,
            LinkPurpose.RESET_PASSWORD: reset_ttl,
        }
        self._tasks: set[asyncio.Task[None]] = set()

    def later(self, work: Callable[[], Awaitable[object]], what: str) -> None:
        """Run ``work`` after the caller has answered.

        Whether an address has an account decides what ``work`` does (look it up,
        store a link, render and queue a mail); done before answering, that work
        would show in the response time. A failure is logged by ``what`` (never
        an address or a link) and the mail is simply not sent.
        """
        task = asyncio.get_running_loop().create_task(self._quietly(work, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, within: float = SETTLE_SECONDS) -> None:
        """Wait (at most ``within`` seconds) for the work :meth:`later` started; on close."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    async def _quietly(self, work: Callable[[], Awaitable[object]], what: str) -> None:
        try:
            await asyncio.sleep(DEFER_SECONDS)
            await work()
        except GatepassError as exc:  # a store outage: fixed text, no address
            logger.warning("%s not done: %s", what, type(exc).__name__)
        except Exception:
            logger.exception("%s failed", what)

    async def send_verification(self, user_id: str, email: str) -> bool:
        """Mail a verification link to ``email``; ``False`` when over its limit."""
        return await self._send_link(user_id, email, LinkPurpose.VERIFY_EMAIL, VERIFY_EMAIL, {})

    async def send_reset(self, user_id: str, email: str) -> bool:
        return await self._send_link(user_id, email, LinkPurpose.RESET_PASSWORD, RESET_PASSWORD, {})

    async def send_change(self, user_id: str, new_email: str) -> bool:
        """Mail the link that moves the account to ``new_email``, to that address."""
        return await self._send_link(
            user_id, new_email, LinkPurpose.CHANGE_EMAIL, EMAIL_CHANGE, {"new_email": new_email}
        )

    async def notify_email_changed(self, old_email: str, new_email: str) -> bool:
        """Tell the old address that the account moved (no link)."""
        return await self._send_notice(old_email, EMAIL_CHANGED, {"new_email": new_email})

    async def notify_signup_existing(self, email: str) -> bool:
        """Tell the owner of ``email`` that someone tried to register it (no link token:
        the sign-in and forgot-password pages only)."""
        context = {
            "login_url": f"{self._public_url}/login",
            "forgot_url": f"{self._public_url}/forgot-password",
        }
        return await self._send_notice(email, SIGNUP_EXISTING, context)

    async def notify_change_existing(self, email: str) -> bool:
        """Tell the owner of ``email`` that another account asked to move to it."""
        return await self._send_notice(email, EMAIL_CHANGE_EXISTING, {})

    async def _send_link(
        self,
        user_id: str,
        email: str,
        purpose: LinkPurpose,
        template: str,
        context: Mapping[str, str],
    ) -> bool:
        if not await self._within_limit(email, template):
            return False
        token = new_link_token()
        now = self._clock()
        ttl = self._ttl[purpose]
        await self._links.create_link(
            LinkRecord(
                token_hash=token_digest(token),
                purpose=purpose.value,
                user_id=user_id,
                email=email,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        self._sender.submit(
            email,
            template,
            {
                **context,
                "link": link_url(self._public_url, purpose, token),
                "expires_in": describe_seconds(ttl),
            },
        )
        return True

    async def _send_notice(self, email: str, template: str, context: Mapping[str, str]) -> bool:
        if not await self._within_limit(email, template):
            return False
        self._sender.submit(email, template, context)
        return True

    async def _within_limit(self, email: str, template: str) -> bool:
        if await self._limits.allow_mail_to(email):
            return True
        self._metrics.mails.labels(template=template, result="suppressed").inc()
        logger.info("mail %s not sent: the address is over its mail limit", template)
        return False
