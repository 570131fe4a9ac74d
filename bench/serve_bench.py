#!/usr/bin/env python3
"""serve_bench.py - aggregate generated tokens/s and time to first token of `porta serve` at 1,
2, 4 and 8 parallel streams (greedy, the same number of tokens each, ignore_eos), the
continuous-batching numbers of issue 7. Standard library only.

Starts its own server (./porta serve, slots = the largest stream count, a free loopback port)
unless --url points at a running one.

  python3 bench/serve_bench.py [-m MODEL] [--streams 1,2,4,8] [-n 64] [-r 3] [--ctx 1024]
                               [--bin ./porta] [--url http://127.0.0.1:8080] [--json]
"""
import argparse
import http.client
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, slots):
    port = free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    cfg.write(f'model: {{ path = "{args.model}"; n_ctx = {args.ctx}; alias = "bench"; }};\n'
              f'backend: {{ order = ["{args.backend}"]; }};\n'
              f'server: {{ host = "127.0.0.1"; port = {port}; slots = {slots}; queue = 64; }};\n'
              f'log: {{ level = "warn"; }};\n')
    cfg.close()
    proc = subprocess.Popen([args.bin, "serve", "-c", cfg.name], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            sys.exit(f"serve_bench: porta serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url, cfg.name
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("serve_bench: the server did not become ready")


def one_stream(url, prompt, n_tokens, out, i):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {"prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]}")
    first, usage = None, None
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        j = json.loads(line[6:])
        if j.get("usage"):
            usage = j["usage"]
        if first is None and j["choices"] and j["choices"][0]["text"]:
            first = time.perf_counter() - t0
    c.close()
    out[i] = (first, usage["completion_tokens"], time.perf_counter() - t0)


def level(url, n_streams, n_tokens):
    prompts = [f"Write a short story about a robot named Unit-{i}." for i in range(n_streams)]
    out = [None] * n_streams
    th = [threading.Thread(target=one_stream, args=(url, prompts[i], n_tokens, out, i))
          for i in range(n_streams)]
    t0 = time.perf_counter()
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    if any(o is None for o in out):
        raise RuntimeError("a stream failed")
    gen = sum(o[1] for o in out)
    return {"streams": n_streams, "tokens": gen, "seconds": wall, "tok_s": gen / wall,
            "ttft_mean": statistics.mean(o[0] for o in out),
            "ttft_max": max(o[0] for o in out),
            "per_stream_tok_s": statistics.mean(o[1] / o[2] for o in out)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=str(ROOT / "models/smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--bin", default=str(ROOT / "porta"))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--url", help="use a running server instead of starting one")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("-n", "--tokens", type=int, default=64)
    ap.add_argument("-r", "--repeat", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    proc = cfg = None
    url = args.url
    if not url:
        proc, url, cfg = start_server(args, max(streams))
    try:
        level(url, 1, 8)  # warm-up
        rows = []
        for n in streams:
            runs = [level(url, n, args.tokens) for _ in range(args.repeat)]
            best = max(runs, key=lambda r: r["tok_s"])
            best["tok_s_median"] = statistics.median(r["tok_s"] for r in runs)
            rows.append(best)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            os.unlink(cfg)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    base = rows[0]["tok_s"]
    print(f"| streams | generated tok/s (best of {args.repeat}) | median | x one stream "
          f"| per-stream tok/s | TTFT mean s | TTFT max s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['streams']} | {r['tok_s']:.1f} | {r['tok_s_median']:.1f} | "
              f"{r['tok_s'] / base:.2f} | {r['per_stream_tok_s']:.1f} | {r['ttft_mean']:.3f} | "
              f"{r['ttft_max']:.3f} |")


if __name__ == "__main__":
    main()
