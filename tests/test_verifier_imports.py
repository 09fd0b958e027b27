"""A resource server installs and imports the verifier without the auth server's stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

#: Modules of the server stack; none may be loaded by ``import gatepass.verifier``.
SERVER_MODULES = (
    "sqlalchemy",
    "argon2",
    "starlette",
    "jinja2",
    "prometheus_client",
    "pydantic",
    "itsdangerous",
)
#: Distributions of the server stack; none may be required by ``gatepass[verifier]``.
SERVER_DISTRIBUTIONS = ("sqlalchemy", "argon2-cffi", "starlette", "jinja2", "prometheus-client")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_import_gatepass_verifier_loads_no_server_module() -> None:
    probe = (
        "import json, sys\n"
        "import gatepass.verifier\n"
        "from gatepass.verifier import Verifier, AsyncVerifier, VerifiedToken\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert "gatepass" in loaded
    assert "httpx" in loaded
    assert loaded.isdisjoint(SERVER_MODULES), sorted(loaded & set(SERVER_MODULES))


def closure(distribution: str, extras: frozenset[str]) -> set[str]:
    """Every distribution ``distribution[extras]`` needs, itself included, from the
    installed metadata (markers evaluated for this interpreter and those extras)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    pending = [(_normalise(distribution), extras)]
    while pending:
        name, wanted = pending.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        names.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            applies = marker is None or any(
                marker.evaluate({"extra": extra}) for extra in (wanted or {""})
            )
            if applies:
                pending.append((_normalise(requirement.name), frozenset(requirement.extras)))
    return names


def test_verifier_extra_installs_no_server_distribution() -> None:
    needed = closure("gatepass", frozenset({"verifier"}))
    assert {"gatepass", "httpx", "pyjwt", "cryptography"} <= needed
    assert needed.isdisjoint(SERVER_DISTRIBUTIONS), sorted(needed & set(SERVER_DISTRIBUTIONS))


def test_the_closure_walk_sees_the_server_stack_in_the_server_extra() -> None:
    """The walk above would notice: the server extra does pull the server stack."""
    assert set(SERVER_DISTRIBUTIONS) <= closure("gatepass", frozenset({"server"}))
