"""Starts real `tandem serve` processes on SmolLM2-135M for the server tests.

Each server binds a free loopback port, is polled on /health until it answers 200 (the
model loads after the port is bound, so /health is 503 meanwhile), and is stopped at the
end of the session. Its log goes to tests/server/logs/<name>.log (shown on failure).
Environment: TANDEM_BIN (default target/debug/tandem, which `cargo test` builds),
TANDEM_SERVER_MODEL (default smollm2, from the model cache).
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TANDEM_BIN", str(ROOT / "target" / "debug" / "tandem"))
MODEL = os.environ.get("TANDEM_SERVER_MODEL", "smollm2")
LOGS = Path(__file__).resolve().parent / "logs"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    """Resident memory of process `pid`, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, name, *args):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        LOGS.mkdir(exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        self.log = open(self.log_path, "w")
        cmd = [BIN, "serve", "-m", MODEL, "--port", str(self.port), "--ctx", "1024", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tandem serve exited: {self.log_path.read_text()}")
            try:
                status, _ = self.get("/health")
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"tandem serve did not get ready: {self.log_path.read_text()}")
            time.sleep(0.3)

    def request(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path, headers=None):
        status, body, _ = self.request("GET", path, headers=headers)
        return status, body

    def post(self, path, body=None, headers=None, raw=None):
        status, data, hdrs = self.request("POST", path, body, headers, raw)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        return status, parsed, hdrs

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def server():
    s = Server("plain")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def guarded():
    """API key, CORS for one origin, a queue of one, SmolLM2 drafting for itself, a 2 s
    header timeout, 300 connections at most, 64 KiB bodies."""
    s = Server(
        "guarded",
        "--api-key", "sesame",
        "--cors-origin", "http://app.example",
        "--queue", "1",
        "--drafter", MODEL,
        "--header-timeout", "2",
        "--max-connections", "300",
        "--max-body", "65536",
    )
    yield s
    s.stop()
