"""test_bad_requests.py - a table of bad requests (wrong types, out-of-range values, malformed
JSON, huge bodies and headers, unknown fields, hostile nesting), each with the status and the
error object's `param` it must get; the server must survive them all."""
import json
import socket

import pytest
import requests

CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
M = [{"role": "user", "content": "hi"}]


def chat(**kw):
    d = {"messages": M, "max_tokens": 1}
    d.update(kw)
    return d


def text(**kw):
    d = {"prompt": "hi", "max_tokens": 1}
    d.update(kw)
    return d


# (name, path, body: dict -> JSON | bytes as is, status, param)
CASES = [
    ("malformed json", CHAT, b'{"messages": [', 400, None),
    ("trailing garbage", CHAT, b'{"messages": []} x', 400, None),
    ("not an object", CHAT, b"[1, 2]", 400, None),
    ("empty body", CHAT, b"", 400, None),
    ("deep nesting", CHAT, b"[" * 5000 + b"]" * 5000, 400, None),
    ("missing messages", CHAT, {}, 400, "messages"),
    ("messages not array", CHAT, {"messages": "hi"}, 400, "messages"),
    ("messages empty", CHAT, {"messages": []}, 400, "messages"),
    ("too many messages", CHAT, {"messages": M * 1025}, 400, "messages"),
    ("message not object", CHAT, {"messages": ["hi"]}, 400, "messages[0]"),
    ("bad role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ("role missing", CHAT, {"messages": [{"content": "x"}]}, 400, "messages[0].role"),
    ("content number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400,
     "messages[0].content"),
    ("content image", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, 400,
     "messages[0].content"),
    ("temperature string", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("temperature negative", CHAT, chat(temperature=-0.1), 400, "temperature"),
    ("temperature too high", CHAT, chat(temperature=2.5), 400, "temperature"),
    ("top_p zero", CHAT, chat(top_p=0), 400, "top_p"),
    ("top_p above 1", CHAT, chat(top_p=1.5), 400, "top_p"),
    ("top_k fraction", CHAT, chat(top_k=1.5), 400, "top_k"),
    ("top_k negative", CHAT, chat(top_k=-2), 400, "top_k"),
    ("min_p above 1", CHAT, chat(min_p=2), 400, "min_p"),
    ("max_tokens zero", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens string", CHAT, chat(max_tokens="10"), 400, "max_tokens"),
    ("max_tokens fraction", CHAT, chat(max_tokens=3.5), 400, "max_tokens"),
    ("max_tokens over limit", CHAT, chat(max_tokens=10 ** 9), 400, "max_tokens"),
    ("max_completion_tokens", CHAT, chat(max_completion_tokens=-1), 400, "max_completion_tokens"),
    ("n zero", CHAT, chat(n=0), 400, "n"),
    ("n huge", CHAT, chat(n=100), 400, "n"),
    ("seed string", CHAT, chat(seed="x"), 400, "seed"),
    ("seed fraction", CHAT, chat(seed=1.5), 400, "seed"),
    ("presence_penalty", CHAT, chat(presence_penalty=3), 400, "presence_penalty"),
    ("frequency_penalty", CHAT, chat(frequency_penalty=-3), 400, "frequency_penalty"),
    ("repetition_penalty", CHAT, chat(repetition_penalty=0), 400, "repetition_penalty"),
    ("no_repeat_ngram_size", CHAT, chat(no_repeat_ngram_size=-1), 400, "no_repeat_ngram_size"),
    ("min_tokens over max", CHAT, chat(max_tokens=5, min_tokens=6), 400, "min_tokens"),
    ("num_beams zero", CHAT, chat(num_beams=0), 400, "num_beams"),
    ("num_beams over slots", CHAT, chat(num_beams=9), 400, "num_beams"),
    ("n over num_beams", CHAT, chat(num_beams=2, n=3), 400, "n"),
    ("logit_bias list", CHAT, chat(logit_bias=[1]), 400, "logit_bias"),
    ("logit_bias key", CHAT, chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    ("logit_bias id", CHAT, chat(logit_bias={"99999999": 1}), 400, "logit_bias"),
    ("logit_bias value", CHAT, chat(logit_bias={"5": 200}), 400, "logit_bias"),
    ("logit_bias type", CHAT, chat(logit_bias={"5": "x"}), 400, "logit_bias"),
    ("logprobs type", CHAT, chat(logprobs="yes"), 400, "logprobs"),
    ("top_logprobs alone", CHAT, chat(top_logprobs=3), 400, "top_logprobs"),
    ("top_logprobs range", CHAT, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    ("stream type", CHAT, chat(stream="true"), 400, "stream"),
    ("stream_options no stream", CHAT, chat(stream_options={"include_usage": True}), 400,
     "stream_options"),
    ("stream_options type", CHAT, chat(stream=True, stream_options={"include_usage": "yes"}), 400,
     "stream_options.include_usage"),
    ("stream_options unknown", CHAT, chat(stream=True, stream_options={"x": 1}), 400,
     "stream_options"),
    ("stop number", CHAT, chat(stop=5), 400, "stop"),
    ("stop list of numbers", CHAT, chat(stop=[1]), 400, "stop"),
    ("too many stops", CHAT, chat(stop=["a"] * 17), 400, "stop"),
    ("stop too long", CHAT, chat(stop=["x" * 300]), 400, "stop"),
    ("unknown field", CHAT, chat(frobnicate=1), 400, "frobnicate"),
    ("prompt in chat", CHAT, chat(prompt="x"), 400, "prompt"),
    ("tools", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    ("response_format", CHAT, chat(response_format={"type": "json_object"}), 400,
     "response_format"),
    ("model type", CHAT, chat(model=5), 400, "model"),
    ("unknown model", CHAT, chat(model="nope"), 404, "model"),
    ("ignore_eos type", CHAT, chat(ignore_eos="x"), 400, "ignore_eos"),
    ("prompt missing", TEXT, {"max_tokens": 1}, 400, "prompt"),
    ("prompt number", TEXT, text(prompt=5), 400, "prompt"),
    ("prompt empty", TEXT, text(prompt=""), 400, "prompt"),
    ("prompt ids empty", TEXT, text(prompt=[]), 400, "prompt"),
    ("prompt id negative", TEXT, text(prompt=[-1]), 400, "prompt"),
    ("prompt id too big", TEXT, text(prompt=[49152]), 400, "prompt"),
    ("prompt id fraction", TEXT, text(prompt=[1.5]), 400, "prompt"),
    ("several prompts", TEXT, text(prompt=["a", "b"]), 400, "prompt"),
    ("prompt too long", TEXT, text(prompt="hello " * 1100), 400, "prompt"),
    ("echo", TEXT, text(echo=True), 400, "echo"),
    ("suffix", TEXT, text(suffix="x"), 400, "suffix"),
    ("best_of", TEXT, text(best_of=3), 400, "best_of"),
    ("logprobs range", TEXT, text(logprobs=21), 400, "logprobs"),
    ("logprobs negative", TEXT, text(logprobs=-1), 400, "logprobs"),
    ("messages in completions", TEXT, text(messages=M), 400, "messages"),
    ("top_logprobs in completions", TEXT, text(top_logprobs=2), 400, "top_logprobs"),
    # accepted: odd but valid input must not be refused
    ("invalid utf-8 text", TEXT, b'{"prompt": "caf\xe9 \xff", "max_tokens": 1}', 200, None),
    ("NUL escape", TEXT, text(prompt="a\u0000b"), 200, None),
    ("developer role, parts", CHAT, {"max_tokens": 1, "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "hi", "name": "bob"}]}, 200, None),
    ("known ignorable fields", CHAT, chat(user="u", store=False, tool_choice="none", tools=[],
                                          response_format={"type": "text"}, seed=-5), 200, None),
]


@pytest.mark.parametrize("name,path,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_request(srv, name, path, body, status, param):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = requests.post(srv.url + path, data=data, headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == status, r.text
    if status != 200:
        err = r.json()["error"]
        assert err["param"] == param, err
        assert isinstance(err["message"], str) and err["message"]
        assert err["type"] in ("invalid_request_error", "server_error")


def test_huge_bodies(srv):
    big = json.dumps(chat(stop=["x"], user="y" * 100_000)).encode()
    r = requests.post(srv.url + CHAT, data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # chunked transfer: no Content-Length to refuse early
        for _ in range(100):
            yield b"x" * 1024
    r = requests.post(srv.url + CHAT, data=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_huge_header(srv):
    r = requests.get(srv.url + "/health", headers={"X-Big": "a" * 100_000})
    assert r.status_code in (400, 413, 431)


def test_methods_and_paths(srv):
    assert requests.get(srv.url + CHAT).status_code == 405
    assert requests.post(srv.url + "/health").status_code == 405
    r = requests.get(srv.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert requests.get(srv.url + "/../../etc/passwd").status_code == 404
    assert requests.get(srv.url + "/v1/models/smollm2").json()["id"] == "smollm2"


def test_garbage_on_the_socket(srv):
    """Raw bytes that are not HTTP, then a half-sent request: the server answers or closes."""
    for junk in (b"\x00\x01\x02 GARBAGE\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99\r\n\r\n{"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(junk)
            try:
                s.shutdown(socket.SHUT_WR)
                s.recv(4096)
            except OSError:
                pass
    assert requests.get(srv.url + "/health").status_code == 200


def test_server_survived(srv):
    assert requests.get(srv.url + "/health").status_code == 200
    m = srv.metrics()
    assert m['porta_requests_total{status="4xx"}'] >= len([c for c in CASES if c[3] >= 400])
    assert m['porta_requests_total{status="5xx"}'] == 0
