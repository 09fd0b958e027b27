"""The pieces sync adapters share: one event loop thread per process (also after a
fork) and the bridge that runs one request through an ASGI app."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatepass.integrations._bridge import BridgedRequest, call_asgi
from gatepass.integrations._sync import LoopThread


async def _current_loop_id() -> int:
    return id(asyncio.get_running_loop())


def test_every_call_runs_on_one_loop_whatever_thread_calls() -> None:
    runner = LoopThread()
    try:
        with ThreadPoolExecutor(8) as pool:
            loops = set(pool.map(lambda _: runner.run(_current_loop_id()), range(64)))
        assert len(loops) == 1
        assert loops == {runner.run(_current_loop_id())}
    finally:
        runner.stop()


def test_start_hook_runs_once_before_any_call() -> None:
    runner = LoopThread()
    started: list[int] = []

    async def hook() -> None:
        started.append(id(asyncio.get_running_loop()))

    runner.on_start(hook)
    try:
        first = runner.run(_current_loop_id())
        runner.run(_current_loop_id())
        assert started == [first]
    finally:
        runner.stop()


def test_an_exception_reaches_the_caller() -> None:
    runner = LoopThread()

    async def fail() -> None:
        raise KeyError("boom")

    try:
        with pytest.raises(KeyError):
            runner.run(fail())
    finally:
        runner.stop()


def test_a_call_that_does_not_answer_in_time_is_given_up() -> None:
    runner = LoopThread()
    try:
        with pytest.raises(TimeoutError):
            runner.run(asyncio.sleep(5), timeout=0.05)
        assert runner.run(_current_loop_id())  # the loop is still usable
    finally:
        runner.stop()


def test_calling_run_from_the_loop_itself_is_refused_not_a_deadlock() -> None:
    runner = LoopThread()

    async def reenter() -> None:
        runner.run(_current_loop_id())

    try:
        with pytest.raises(RuntimeError):
            runner.run(reenter())
    finally:
        runner.stop()


def _child_uses_the_runner(runner: LoopThread, parent_loop: int, out: Any) -> None:
    try:
        child_loop = runner.run(_current_loop_id(), timeout=5)
        out.put(("ok", child_loop != parent_loop, threading.active_count()))
    except BaseException as exc:  # report anything: a hang would be the bug
        out.put(("error", repr(exc), 0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (pre-fork servers)")
def test_a_forked_child_starts_its_own_loop_instead_of_waiting_on_the_parents() -> None:
    runner = LoopThread()
    try:
        parent_loop = runner.run(_current_loop_id())
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_child_uses_the_runner, args=(runner, parent_loop, out))
        child.start()
        status, fresh_loop, _threads = out.get(timeout=10)
        child.join(10)
        assert status == "ok"
        assert fresh_loop is True
        assert runner.run(_current_loop_id()) == parent_loop  # the parent's is untouched
    finally:
        runner.stop()


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "cookies": request.headers.getlist("cookie"),
            "client": request.client.host if request.client else None,
            "body": body.decode(),
        },
        status_code=201,
        headers={"x-answer": "yes"},
    )


def test_the_bridge_passes_every_request_fact_and_collects_the_answer() -> None:
    app = Starlette(routes=[Route("/auth/echo", _echo, methods=["POST"])])
    request = BridgedRequest(
        method="post",
        path="/auth/echo",
        query_string=b"a=1",
        headers=[(b"Cookie", b"x=1"), (b"cookie", b"x=2"), (b"content-type", b"text/plain")],
        body=b"hello",
        client=("192.0.2.1", 5000),
    )
    response = asyncio.run(call_asgi(app, request))
    assert response.status == 201
    assert ("x-answer", "yes") in response.headers
    assert response.body == (
        b'{"method":"POST","path":"/auth/echo","query":"a=1",'
        b'"cookies":["x=1","x=2"],"client":"192.0.2.1","body":"hello"}'
    )
