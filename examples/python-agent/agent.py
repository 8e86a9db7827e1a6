#!/usr/bin/env python3
"""A small agent beside a `vitals serve` sidecar, using only the standard library.

It does what any agent can do over vitals' HTTP API:
  - beats from its main loop (POST /heartbeat), so a hung loop fails /healthz/agent;
  - says when its warm-up is done (POST /started), which /startupz waits for;
  - reports a capability from real traffic (PUT /signals/web-search): each tool call that fails
    marks it down (readiness stays 200 with X-Agent-Mode: degraded), each that works marks it up.

Environment:
  VITALS_URL      the sidecar, default http://127.0.0.1:8080
  TOOL_URL        the web-search tool the agent calls, default http://127.0.0.1:9000/search
  WARMUP_SECONDS  how long the warm-up takes before POST /started (default 2)
  BEAT_SECONDS    the main loop's period (default 1)
  SIGNAL_TTL      how long one report stays valid, such as "10s" (default: the signal's ttl)
  VITALS_TOKEN    a bearer token, when the sidecar sets server.admin_token_env
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

VITALS = os.environ.get("VITALS_URL", "http://127.0.0.1:8080").rstrip("/")
TOOL = os.environ.get("TOOL_URL", "http://127.0.0.1:9000/search")
WARMUP = float(os.environ.get("WARMUP_SECONDS", "2"))
BEAT = float(os.environ.get("BEAT_SECONDS", "1"))
TTL = os.environ.get("SIGNAL_TTL")
TOKEN = os.environ.get("VITALS_TOKEN")


def log(message, **fields):
    print(json.dumps({"msg": message, **fields}), flush=True)


def vitals(method, path, body=None):
    """Calls vitals; a failure is logged, never fatal: health reporting must not kill the agent."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(VITALS + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        log("vitals refused a call", path=path, status=e.code, answer=e.read().decode(errors="replace").strip())
        return e.code
    except OSError as e:
        log("vitals unreachable", path=path, error=str(e))
        return None


def call_tool():
    """One real tool call; returns None on success, else why it failed."""
    try:
        with urllib.request.urlopen(TOOL, timeout=2) as resp:
            resp.read()
            return None
    except urllib.error.HTTPError as e:
        return f"web search answers {e.code}"
    except OSError as e:
        return f"web search unreachable: {e}"


def report(up, reason=""):
    body = {"up": up, "reason": reason}
    if TTL:
        body["ttl"] = TTL
    vitals("PUT", "/signals/web-search", body)


def main():
    log("warming up", seconds=WARMUP)
    deadline = time.monotonic() + WARMUP
    while time.monotonic() < deadline:
        vitals("POST", "/heartbeat")  # warm-up is slow work too: keep beating through it
        time.sleep(min(BEAT, max(0.0, deadline - time.monotonic())))
    vitals("POST", "/started")
    log("started")
    last = None
    while True:
        vitals("POST", "/heartbeat")
        problem = call_tool()  # stands for the agent's real work, which uses the tool
        # Report every turn: a report lives only for its ttl, so silence reads as down.
        report(problem is None, problem or "")
        if problem != last:
            log("web search " + ("ok" if problem is None else "failing"), reason=problem)
            last = problem
        time.sleep(BEAT)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
