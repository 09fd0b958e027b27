"""The README's examples work as written: its register and login bodies are taken
from its code blocks and sent to the real app."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

README = Path(__file__).resolve().parent.parent / "README.md"
CODE_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
CURL_POST = re.compile(r"curl .*?-X POST \S+?(/auth/\w+).*?-d '(\{.*?\})'", re.DOTALL)


def readme_bodies() -> list[tuple[str, dict[str, Any]]]:
    """(path, JSON body) of every POST in the README whose body is a literal."""
    bodies: list[tuple[str, dict[str, Any]]] = []
    for language, code in CODE_BLOCK.findall(README.read_text()):
        if language == "sh":
            bodies += [(path, json.loads(body)) for path, body in CURL_POST.findall(code)]
        elif language == "python":
            for node in ast.walk(ast.parse(code)):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "post"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    continue
                for keyword in node.keywords:
                    if keyword.arg == "json":
                        try:
                            body = ast.literal_eval(keyword.value)
                        except ValueError:
                            continue  # built from earlier results, e.g. the refresh token
                        bodies.append((str(node.args[0].value), body))
    return bodies


def test_readme_register_and_login_examples_work_as_written(client: TestClient) -> None:
    bodies = readme_bodies()
    paths = [path for path, _ in bodies]
    assert paths[0] == "/auth/register"
    assert paths.count("/auth/login") >= 2
    for path, body in bodies:
        client.cookies.clear()
        response = client.post(path, json=body)
        expected = {"/auth/register": 201, "/auth/password/forgot": 202}.get(path, 200)
        assert response.status_code == expected, (path, response.text)
        if body.get("client") == "mobile":
            assert response.json()["token_type"] == "Bearer"


def test_every_gatepass_name_the_readme_imports_exists() -> None:
    """The quick starts name real modules and classes (a rename breaks this test,
    not a reader's first try)."""
    imported: list[tuple[str, str]] = []
    for language, code in CODE_BLOCK.findall(README.read_text()):
        if language != "python":
            continue
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gatepass"):
                imported += [(str(node.module), alias.name) for alias in node.names]
    # The core, the verifier and each adapter imported by name (Django names its
    # classes in settings strings instead).
    assert len({module for module, _ in imported}) >= 5
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
