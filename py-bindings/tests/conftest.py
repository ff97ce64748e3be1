"""pytest configuration for the qlearn suite, and the real qlearn server
(saas-host) for the tests that talk to it.

Those need a built `saas-host` binary: set QLEARN_SAAS_HOST to its path (the
test script builds it and sets it), or have it in a target*/{debug,release}/
folder of the repository. Without one they are skipped with the reason
printed (run pytest with -rs to see it). A server is started on 127.0.0.1
with a free port and an in-memory database, and stopped by its pid.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import settings

# No example database in the working tree: every run draws fresh examples
# (the failing example is printed when a property fails).
settings.register_profile("qlearn", database=None)
settings.load_profile("qlearn")

REPO = Path(__file__).resolve().parents[2]


def find_binary() -> str | None:
    env = os.environ.get("QLEARN_SAAS_HOST")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = [p for p in glob.glob(str(REPO / "target*" / "*" / "saas-host")) if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A saas-host child process on 127.0.0.1 with a free port and a
    `memory://` database; `limits` (JSON of the tiers' limits) goes to
    LIMITS_FILE."""

    def __init__(self, binary: str, tmp: Path, limits: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HOST", "PORT")}
        env["SECRET_KEY"] = secrets.token_hex(32)
        env.pop("LIMITS_FILE", None)
        if limits is not None:
            (tmp / "limits.json").write_text(json.dumps(limits))
            env["LIMITS_FILE"] = str(tmp / "limits.json")
        self.log = open(tmp / "saas-host.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--database-url", "memory://"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"saas-host did not start: {(tmp / 'saas-host.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.token = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def call(self, method: str, path: str, body: bytes | dict | None = None,
             content_type: str = "application/json") -> tuple[int, bytes, Message]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for _attempt in range(20):
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.read(), r.headers
            except urllib.error.HTTPError as e:
                body = e.read()
                # The free tier allows 5 requests/s (burst 10): wait as told.
                if e.code == 429 and b"rate_limited" in body:
                    time.sleep(float(e.headers.get("Retry-After") or 1))
                    continue
                return e.code, body, e.headers
        raise AssertionError(f"{method} {path}: still rate limited")

    def json(self, method: str, path: str, body: dict | None = None, expect: int = 200):
        status, raw, _ = self.call(method, path, body)
        assert status == expect, (status, raw[:500])
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """Starts servers (`start_server(limits=None)`), all stopped when the
    test module ends; skips without a saas-host binary."""
    binary = find_binary()
    if binary is None:
        pytest.skip("saas-host binary not found: build it (cargo build -p saas-host) or set "
                    "QLEARN_SAAS_HOST; the server tests did not run")
    started: list[Server] = []

    def start(limits: dict | None = None) -> Server:
        srv = Server(binary, tmp_path_factory.mktemp("server"), limits)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


#: The free tier's limits lifted (no quota, no model limit, 1000 requests/s,
#: every paid feature, 100 evaluation jobs a day, 10 at once: the client's
#: tests are not about plans).
ROOMY_LIMITS = {"free": {"monthly_calls": None, "max_models": None, "rate_per_second": 1000,
                         "burst": 1000, "features": ["advanced_algorithms", "decisions"],
                         "evaluations_per_day": 100, "evaluations_at_once": 10,
                         "evaluation_max_decisions": 100000}}


@pytest.fixture(scope="module")
def free(start_server):
    """A server with the SPEC's tiers (free: 100 calls a month, 3 models, 5/s burst 10)."""
    return start_server()


@pytest.fixture(scope="module")
def roomy(start_server):
    """A server whose free tier has no quota, no model limit, 1000 requests/s and
    every paid feature."""
    return start_server(ROOMY_LIMITS)
