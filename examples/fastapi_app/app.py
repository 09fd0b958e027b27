"""A FastAPI app with gatepass embedded: sign-in under /api/auth, a protected route
and an admin-only one.

Run it (from the repository root, after ``make install``)::

    .venv/bin/uvicorn examples.fastapi_app.app:app

Settings come from the environment (``GATEPASS_*``); with none set it runs in dev
mode (plain http on 127.0.0.1:8000) with its SQLite data in a temporary folder.
"""

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from gatepass import Identity
from gatepass.config import Settings, load_settings
from gatepass.integrations.fastapi import (
    GatepassSecurity,
    auth_router,
    gatepass_lifespan,
    install,
)

#: Used only when the environment names no setting at all.
DEV_DEFAULTS = {"GATEPASS_DEV": "1", "GATEPASS_PUBLIC_URL": "http://127.0.0.1:8000"}


def settings_from_env() -> Settings:
    env = dict(os.environ)
    if not any(name.startswith("GATEPASS_") for name in env):
        env.update(DEV_DEFAULTS)
        data_dir = Path(tempfile.mkdtemp(prefix="gatepass-example-")) / ".gatepass"
        return load_settings(env, data_dir=data_dir)
    return load_settings(env)


# (No ``from __future__ import annotations`` here: FastAPI reads the route
# annotations at run time, and ``user``/``admin`` below are local names.)
def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or settings_from_env()
    # The dependencies name the cookie the settings use (gatepass_session in dev mode).
    security = GatepassSecurity.for_settings(settings)
    user = Annotated[Identity, Depends(security.current_identity)]
    admin = Annotated[Identity, Depends(security.require_roles("admin"))]

    app = FastAPI(title="gatepass example", lifespan=gatepass_lifespan(settings))
    install(app)
    app.include_router(auth_router(), prefix="/api")

    @app.get("/notes")
    async def notes(identity: user) -> dict[str, Any]:
        return {"owner": identity.user.email, "notes": ["buy milk"], "method": identity.method}

    @app.get("/admin/stats")
    async def stats(identity: admin) -> dict[str, Any]:
        return {"users": "many", "asked_by": identity.user.email}

    return app


app = create_app()
