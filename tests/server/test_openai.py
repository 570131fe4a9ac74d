"""test_openai.py - the official `openai` client against porta serve: models, chat and text
completions (streamed and not, greedy results identical both ways), usage, stop strings, n and
seed, log-probabilities, beam search, errors, the API key, and reasoning_content with a
DeepSeek-R1 template that opens <think>."""
import json
import subprocess

import openai
import pytest
import requests
from conftest import BIN, MODEL

Q = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.base, api_key="unused", max_retries=0, timeout=120)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2"]
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat(client):
    r = client.chat.completions.create(model="smollm2", messages=Q, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "smollm2"
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 10 and 0 < u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if c.finish_reason == "length":
        assert u.completion_tokens == 12


def test_chat_stream_equals_plain(client):
    kw = dict(model="smollm2", messages=Q, max_tokens=16, temperature=0)
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                 **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    # without include_usage there is no usage chunk
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert all(ch.usage is None for ch in chunks) and all(ch.choices for ch in chunks)


def test_completion_and_stream(client):
    kw = dict(model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0,
              extra_body={"ignore_eos": True})
    r = client.completions.create(**kw)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens == 5
    assert "Paris" in r.choices[0].text
    parts = list(client.completions.create(stream=True, **kw))
    assert "".join(p.choices[0].text for p in parts if p.choices) == r.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"


def tokenize(text):
    out = subprocess.run([BIN, "tokenize", "-m", MODEL, "--json"], input=text.encode(),
                         capture_output=True, check=True).stdout
    return json.loads(out)


def test_prompt_as_token_ids(client):
    text = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                                     temperature=0).choices[0].text
    ids = tokenize("The capital of France is")
    r = client.completions.create(model="smollm2", prompt=ids, max_tokens=4, temperature=0)
    assert r.choices[0].text == text and r.usage.prompt_tokens == len(ids)


def test_stop_strings(client):
    kw = dict(model="smollm2", prompt="List of fruits: apple, banana,", max_tokens=24, temperature=0,
              extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    words = [w for w in full.split() if len(w) > 3]
    assert words, full
    stop = words[len(words) // 2]
    r = client.completions.create(stop=[stop, "zzzz-never"], **kw)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[:full.index(stop)]


def test_n_and_seed(client):
    kw = dict(model="smollm2", messages=Q, max_tokens=8, temperature=1.0, top_p=1.0, n=3, seed=1234)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert 3 <= a.usage.completion_tokens <= 24  # usage counts every choice


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="smollm2", messages=Q, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    for t in lp:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.token == t.top_logprobs[0].token  # greedy: the chosen token is the most likely
        assert abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
        assert bytes(t.bytes).decode("utf-8", "replace")


def test_completion_logprobs(client):
    r = client.completions.create(model="smollm2", prompt="1, 2, 3,", max_tokens=5, temperature=0,
                                  logprobs=2, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0


def test_sampling_parameters(client):
    base = dict(model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0)
    greedy = client.completions.create(**base, logprobs=1)
    first = greedy.choices[0].logprobs.tokens[0]
    # ban the greedy first token by id: the answer must start differently
    tid = tokenize(first)
    assert len(tid) == 1
    banned = client.completions.create(**base, logit_bias={str(tid[0]): -100}, logprobs=1)
    assert banned.choices[0].logprobs.tokens[0] != first
    # every other knob is accepted and honoured where it can be checked
    r = client.completions.create(**base, presence_penalty=0.5, frequency_penalty=0.5, top_p=0.9,
                                  extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3,
                                              "no_repeat_ngram_size": 2, "min_tokens": 4})
    assert r.usage.completion_tokens >= 4
    r = client.completions.create(model="smollm2", prompt="a a a a a a a a", max_tokens=12,
                                  temperature=0, logprobs=1,
                                  extra_body={"no_repeat_ngram_size": 2, "ignore_eos": True})
    toks = r.choices[0].logprobs.tokens
    grams = list(zip(toks, toks[1:]))
    assert len(grams) == len(set(grams)), toks


def test_beam_search(client):
    kw = dict(model="smollm2", prompt="The capital of France is", max_tokens=6,
              extra_body={"num_beams": 3})
    a = client.completions.create(**kw, n=2)
    b = client.completions.create(**kw, n=2)
    assert len(a.choices) == 2 and [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.choices[0].text and a.usage.completion_tokens > 0
    s = list(client.completions.create(stream=True, **kw))
    assert "".join(p.choices[0].text for p in s if p.choices) == \
        client.completions.create(**kw).choices[0].text


def test_cli_beams_match_server(client):
    """`porta run --beams` drives the same beam search over the engine's own sequences: its
    best hypothesis is the server's (same model, context and KV type)."""
    for prompt in ("The capital of France is", "Water boils at"):
        srv_text = client.completions.create(model="smollm2", prompt=prompt, max_tokens=6,
                                             extra_body={"num_beams": 3}).choices[0].text
        out = subprocess.run([BIN, "run", "-m", MODEL, "--backend", "cpu", "--ctx", "1024",
                              "-p", prompt, "-n", "6", "--beams", "3", "-q"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout == srv_text + "\n", (out.stdout, srv_text)


def test_max_completion_tokens(client):
    r = client.chat.completions.create(model="smollm2", messages=Q, max_completion_tokens=3,
                                       temperature=0)
    assert r.usage.completion_tokens <= 3


def test_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=Q)
    assert e.value.status_code == 404 and e.value.body["param"] == "model"
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smollm2", messages=Q, temperature=5)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smollm2", messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smollm2", prompt="x", max_tokens=100000)
    assert e.value.body["param"] == "max_tokens"


def test_health_and_metrics(srv, client):
    assert requests.get(srv.url + "/health").json() == {"status": "ok"}
    client.completions.create(model="smollm2", prompt="Hello", max_tokens=2, temperature=0)
    m = srv.metrics()
    assert m["porta_ready"] == 1 and m["porta_slots_total"] == 8
    assert m['porta_requests_total{status="2xx"}'] >= 1
    assert m["porta_generation_tokens_total"] >= 2 and m["porta_prompt_tokens_total"] >= 1
    assert m["porta_time_to_first_token_seconds_count"] >= 1
    assert m['porta_time_to_first_token_seconds_bucket{le="+Inf"}'] == \
        m["porta_time_to_first_token_seconds_count"]
    assert "porta_queue_length" in m and "porta_tokens_per_second" in m


# ---- the small server: API key, DeepSeek-R1 template with <think> ----

def test_api_key(srv_small):
    bad = openai.OpenAI(base_url=srv_small.base, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401
    assert requests.post(srv_small.base + "/chat/completions", json={}).status_code == 401
    assert requests.get(srv_small.url + "/metrics").status_code == 401
    assert requests.get(srv_small.url + "/health").status_code == 200  # open, for load balancers
    good = openai.OpenAI(base_url=srv_small.base, api_key="sekret-key", max_retries=0)
    assert [m.id for m in good.models.list()] == ["r1-small"]
    log = srv_small.log_text()
    assert "sekret-key" not in log and "wrong" not in log


def test_reasoning_content(srv_small):
    c = openai.OpenAI(base_url=srv_small.base, api_key="sekret-key", max_retries=0, timeout=120)
    kw = dict(model="r1-small", messages=Q, max_tokens=12, temperature=0)
    r = c.chat.completions.create(**kw)
    msg = r.choices[0].message
    reasoning = msg.model_extra.get("reasoning_content")
    # the template opens <think>; SmolLM2 never closes it, so all of it is reasoning
    assert reasoning and msg.content == ""
    chunks = list(c.chat.completions.create(stream=True, **kw))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    streamed = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert streamed == reasoning
    assert "".join(d.content or "" for d in deltas) == ""
