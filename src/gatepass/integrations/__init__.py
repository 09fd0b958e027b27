"""Adapters that embed gatepass in an existing web app, or make one trust its tokens.

Each adapter is thin: the rules live in :mod:`gatepass.web` (cookies, CSRF, client
address, error documents) and in :class:`~gatepass.authenticator.Authenticator`.
Import the adapter of your framework (``gatepass.integrations.fastapi`` ...); this
package imports none of them.
"""
