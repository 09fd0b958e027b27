"""A Flask microservice that trusts the access tokens of a running ``gatepass serve``.

It holds no users and no sessions: each request's Bearer token is verified offline
by :class:`gatepass.verifier.Verifier` against the issuer's JWKS (fetched once,
then cached), so a request costs no call to the auth server.

Run it (from the repository root, after ``make install``, with ``gatepass serve``
listening on 127.0.0.1:8000)::

    export AUTH_ISSUER=http://127.0.0.1:8000
    .venv/bin/flask --app examples.flask_service.app run --port 5000
    .venv/bin/gunicorn -w 2 -b 127.0.0.1:5000 'examples.flask_service.app:create_app()'
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify

from gatepass.integrations.flask import (
    FlaskGatepass,
    current_identity,
    login_required,
    roles_required,
)
from gatepass.verifier import Verifier


def create_app(issuer: str | None = None, *, audience: str | None = None) -> Flask:
    """The service, trusting tokens whose ``iss`` is ``issuer`` (``AUTH_ISSUER``: the
    auth server's ``GATEPASS_ISSUER``, by default its ``http://HOST:PORT``) and whose
    ``aud`` is ``audience`` (``AUTH_AUDIENCE``, default ``gatepass``).

    Called once per worker process (gunicorn without ``--preload``), so each
    worker has its own verifier.
    """
    verifier = Verifier(
        issuer or os.environ["AUTH_ISSUER"],
        audience=audience or os.environ.get("AUTH_AUDIENCE", "gatepass"),
    )
    app = Flask(__name__)
    FlaskGatepass(verifier=verifier).init_app(app)

    @app.get("/api/profile")
    @login_required
    def profile() -> Any:
        return jsonify(user_id=current_identity.user_id, roles=sorted(current_identity.roles))

    @app.get("/api/admin/report")
    @roles_required("admin")
    def admin_report() -> Any:
        return jsonify(report="only admins read this", by=current_identity.user_id)

    return app
