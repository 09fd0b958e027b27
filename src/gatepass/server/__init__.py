"""The standalone auth server: a Starlette app around the gatepass core."""

from gatepass.server.app import create_app

__all__ = ["create_app"]
