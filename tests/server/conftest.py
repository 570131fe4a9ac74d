"""conftest.py - starts `porta serve` for the server tests: each server on a free loopback port
with the default model and its own config file, waits for /health, stops it (SIGTERM) at the
end. PORTA_BIN names the binary (default ./porta); PORTA_TEST_OUT the folder for server logs
and screenshots (default build/test-out/server)."""
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("PORTA_BIN", str(ROOT / "porta"))
MODEL = str(ROOT / "models" / "smollm2-135m-instruct-q4_1.gguf")
OUT = pathlib.Path(os.environ.get("PORTA_TEST_OUT", str(ROOT / "build" / "test-out" / "server")))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `porta serve` process. url: http://127.0.0.1:PORT, base: url + /v1."""

    def __init__(self, name, server_keys, model_keys=None, args=(), wait=True,
                 backend='order = ["cpu"];'):
        OUT.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base = self.url + "/v1"
        model = {"path": MODEL, "n_ctx": 1024, "alias": "smollm2"}
        model.update(model_keys or {})
        server = {"host": "127.0.0.1", "port": self.port}
        server.update(server_keys)

        def section(d):
            return "".join(
                f"  {k} = {v if not isinstance(v, str) else chr(34) + v + chr(34)};\n"
                for k, v in d.items())

        self.cfg = OUT / f"{name}.cfg"
        self.cfg.write_text("model:\n{\n" + section(model) + "};\n"
                            "backend:\n{\n  " + backend + "\n};\n"
                            "server:\n{\n" + section(server) + "};\n"
                            "log:\n{\n  level = \"info\";\n};\n")
        self.log_path = OUT / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "serve", "-c", str(self.cfg), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"porta serve exited ({self.proc.returncode}):\n{self.log_text()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("porta serve did not become ready:\n" + self.log_text())

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def metrics(self, headers=None):
        """The Prometheus text as {name_with_labels: float}."""
        r = requests.get(self.url + "/metrics", headers=headers or {}, timeout=10)
        r.raise_for_status()
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def srv():
    """The main server: 8 slots (the concurrency tests run 8 streams), queue 8."""
    s = Server("main", {"slots": 8, "queue": 8, "max_body_kb": 64, "max_tokens": 512})
    yield s
    rc = s.stop()
    assert rc == 0, "porta serve did not stop cleanly:\n" + s.log_text()


@pytest.fixture(scope="session")
def srv_small():
    """1 slot, queue 1, an API key, a DeepSeek-R1 template that starts inside <think>."""
    s = Server("small", {"slots": 1, "queue": 1, "api_key": "sekret-key", "max_body_kb": 4},
               {"chat_template": "deepseek-r1-think", "alias": "r1-small"})
    yield s
    rc = s.stop()
    assert rc == 0, "porta serve did not stop cleanly:\n" + s.log_text()
