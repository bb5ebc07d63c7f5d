"""Telling the user what the cache did: one log line per run and a websocket event for the chart."""

from __future__ import annotations

import logging

from ..core import RunStats
from ..core.stats import STATS_VERSION

log = logging.getLogger(__name__)

STATS_EVENT = "cgtaylor.stats"


def summary_line(node_id: str | None, stats: RunStats) -> str:
    where = f"node {node_id}, " if node_id is not None else ""
    if stats.threshold is None:
        setting = ""
    elif stats.calibrated:
        setting = f", tolerance {stats.threshold:g}"
    else:
        setting = f", threshold {stats.threshold:g} on block 0's error"
    line = f"CGTaylorCache [{where}{stats.model}, {stats.method}{setting}]: {stats.summary()}"
    memory = stats.memory.summary() if stats.memory is not None else None
    return "; ".join([line, *([memory] if memory else []), *stats.notes])


def send_stats(node_id: str | None, stats: RunStats) -> bool:
    """Send the run's statistics to the browser; False when no ComfyUI server is running (scripts, tests)."""
    return _send(node_id, stats.to_json())


def _send(node_id: str | None, payload: dict) -> bool:
    try:
        from server import PromptServer  # ComfyUI's server.py; absent outside ComfyUI
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    # server.py send_sync(event, data, sid): sid = the client that queued the prompt
    server.send_sync(STATS_EVENT, {**payload, "node": node_id}, getattr(server, "client_id", None))
    return True


def warn(node_id: str | None, message: str) -> None:
    """Something the node found before any run that stops it from accelerating anything: in the log, and
    to the browser as a run without steps whose note says it (the chart shows notes)."""
    where = f" [node {node_id}]" if node_id is not None else ""
    log.warning("CGTaylorCache%s: %s", where, message)
    _send(node_id, {"v": STATS_VERSION, "num_steps": 0, "steps": [], "notes": [message]})


def reporter(node_id: str | None):
    """The end-of-run callback for one node: log, then notify the browser."""

    def report(stats: RunStats) -> None:
        log.info(summary_line(node_id, stats))
        send_stats(node_id, stats)

    return report
