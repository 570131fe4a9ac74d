"""test_lifecycle.py - the server's life: /health and the API answer 503 while the model
loads, command-line flags override the config file, SIGTERM ends running streams and exits 0,
and server/page.c is what server/embed_page.sh makes of server/page.html."""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import requests
from conftest import MODEL, OUT, ROOT, Server, free_port


def test_503_while_loading():
    """The model path is a FIFO: open() blocks, so the server stays in its loading state."""
    fifo = pathlib.Path(tempfile.mkdtemp()) / "model.gguf"
    os.mkfifo(fifo)
    s = Server("loading", {"slots": 1}, {"path": str(fifo)}, wait=False)
    try:
        t0 = time.time()
        while True:
            try:
                r = requests.get(s.url + "/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.time() - t0 < 20 and s.proc.poll() is None, s.log_text()
                time.sleep(0.05)
        assert r.status_code == 503 and r.json() == {"status": "loading"}
        r = requests.post(s.base + "/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        assert r.headers["Retry-After"] == "1"
        assert requests.get(s.url + "/metrics").text.count("porta_ready 0") == 1
    finally:
        with open(fifo, "wb"):      # unblock open(): an empty file is not a model
            pass
        assert s.proc.wait(timeout=20) != 0
        s.stop()
        shutil.rmtree(fifo.parent)


def test_flags_override_config():
    """The config says port P / alias smollm2 / 1 slot; the flags say otherwise."""
    port = free_port()
    s = Server("flags", {"slots": 1}, {"path": "/nonexistent.gguf"},
               args=["-m", MODEL, "--port", str(port), "--alias", "flagged", "--slots", "3",
                     "--host", "127.0.0.1", "--api-key", "k2", "--backend", "cpu"], wait=False)
    s.port, s.url, s.base = port, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1"
    try:
        s.wait_ready()
        h = {"Authorization": "Bearer k2"}
        assert requests.get(s.base + "/models", headers=h).json()["data"][0]["id"] == "flagged"
        assert s.metrics(h)["porta_slots_total"] == 3
        assert requests.get(s.base + "/models").status_code == 401
        assert "listening on http://127.0.0.1:%d/" % port in s.log_text()
    finally:
        assert s.stop() == 0


def test_sigterm_ends_streams():
    s = Server("sigterm", {"slots": 2})
    lines = []

    def client():
        with requests.post(s.base + "/completions", stream=True, timeout=60, json={
                "prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True,
                "stream": True}) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
    t = threading.Thread(target=client)
    t.start()
    t0 = time.time()
    while len(lines) < 6:
        assert time.time() - t0 < 20
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=15) == 0
    t.join(15)
    assert not t.is_alive()
    assert lines[-1] == b"data: [DONE]"
    s.stop()


def test_timeouts():
    """timeout_s = 2: a generation is cut at about 2 s, a client that stalls mid-request is
    dropped after about 2 s of silence."""
    s = Server("timeout", {"slots": 1, "timeout_s": 2})
    try:
        t0 = time.time()
        r = requests.post(s.base + "/completions", timeout=30, json={
            "prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True})
        took = time.time() - t0
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
        assert r.json()["usage"]["completion_tokens"] < 1000 and 1.5 < took < 6
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")  # then silence
            t0 = time.time()
            assert c.recv(100) == b""  # the server hangs up
            assert 1 < time.time() - t0 < 8
        assert requests.get(s.url + "/health").status_code == 200
    finally:
        assert s.stop() == 0


def test_page_c_is_current():
    tmp = pathlib.Path(tempfile.mkdtemp())
    try:
        shutil.copy(ROOT / "server" / "page.html", tmp)
        shutil.copy(ROOT / "server" / "embed_page.sh", tmp)
        subprocess.run(["sh", str(tmp / "embed_page.sh")], check=True)
        assert (tmp / "page.c").read_text() == (ROOT / "server" / "page.c").read_text(), \
            "server/page.c is stale: run sh server/embed_page.sh"
    finally:
        shutil.rmtree(tmp)
