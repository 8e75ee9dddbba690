"""A small FunctionApp for the local host's tests: every trigger kind the connector uses, in a Blueprint.

Functions record what they saw as JSON lines in the folder named by HOST_SAMPLE_MARKERS, so a test can
check what ran, how often and with which arguments, whether the host runs in-process or as a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import azure.functions as func

bp = func.Blueprint()
_write_lock = threading.Lock()


def _record(kind: str, **fields: Any) -> None:
    line = json.dumps({"at": time.time(), **fields}) + "\n"
    with _write_lock, (Path(os.environ["HOST_SAMPLE_MARKERS"]) / f"{kind}.jsonl").open("a") as marker:
        marker.write(line)


@bp.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"Hello, {req.route_params['name']}", headers={"X-Sample": "yes"})


@bp.route(route="items/{id?}", methods=["GET", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
def item(req: func.HttpRequest) -> func.HttpResponse:
    body = {"route": dict(req.route_params), "method": req.method, "params": dict(req.params)}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@bp.route(route="items/new", methods=["GET"])
def new_item(req: func.HttpRequest) -> func.HttpResponse:
    """No auth level: the app's (FUNCTION) applies, as the real indexer does."""
    return func.HttpResponse("the literal route")


@bp.route(route="echo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def echo(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(req.get_body(), status_code=201, headers={"Content-Type": "application/octet-stream"})


@bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the sample function fails on purpose")


@bp.timer_trigger(arg_name="timer", schedule="%HOST_SAMPLE_SCHEDULE%", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    _record("tick", past_due=timer.past_due)


@bp.queue_trigger(arg_name="msg", queue_name="%HOST_SAMPLE_QUEUE%", connection="COSELL_STORAGE")
def work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    started = time.time()
    if body.startswith("slow"):
        time.sleep(0.5)
    _record("work", body=body, id=msg.id, dequeue_count=msg.dequeue_count, started=started,
            thread=threading.current_thread().name)
    if body == "fail":
        raise ValueError("the sample queue function refuses 'fail'")


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
