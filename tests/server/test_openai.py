"""`tandem serve` through the official `openai` client and plain HTTP: the behaviours
llama-server's own server tests check (streamed == non-streamed, limits, stop strings, usage,
seeds, tokenize round trip, context overflow, malformed requests, API key, CORS, cancelled
streams, speculative == plain, metrics), on SmolLM2-135M."""

import http.client
import json
import threading
import time

import openai
import pytest

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]
REPEAT = [
    {
        "role": "user",
        "content": "Repeat exactly: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat.",
    }
]


def client(server, key="none"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def model_id(server):
    return client(server).models.list().data[0].id


def test_health_and_models(server):
    assert server.get("/health") == (200, b'{"status":"ok"}')
    models = client(server).models.list().data
    assert len(models) == 1 and models[0].id.startswith("SmolLM2")


def test_streamed_text_equals_non_streamed_text(server):
    c = client(server)
    whole = c.chat.completions.create(model=model_id(server), messages=QUESTION, max_tokens=24)
    chunks = list(
        c.chat.completions.create(model=model_id(server), messages=QUESTION, max_tokens=24, stream=True)
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content and text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({ch.id for ch in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    # Completions stream the same way.
    w = c.completions.create(model=model_id(server), prompt="The capital of France is", max_tokens=12)
    s = c.completions.create(model=model_id(server), prompt="The capital of France is", max_tokens=12, stream=True)
    assert "".join(ch.choices[0].text for ch in s) == w.choices[0].text


def test_max_tokens_and_stop_strings(server):
    c = client(server)
    r = c.completions.create(model=model_id(server), prompt="1, 2, 3, 4,", max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    full = c.completions.create(model=model_id(server), prompt="1, 2, 3, 4,", max_tokens=16).choices[0].text
    assert " 7" in full, full
    cut = c.completions.create(model=model_id(server), prompt="1, 2, 3, 4,", max_tokens=16, stop=[" 7"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(" 7")]


def test_usage_counts_streamed_and_not(server):
    c = client(server)
    r = c.chat.completions.create(model=model_id(server), messages=QUESTION, max_tokens=10)
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens <= 10
    chunks = list(
        c.chat.completions.create(
            model=model_id(server), messages=QUESTION, max_tokens=10, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == u.model_dump()
    t = r.model_extra["timings"]
    assert t["predicted_n"] == u.completion_tokens and t["prompt_n"] + t["cache_n"] == u.prompt_tokens


def test_seed_repeats_a_sampled_answer(server):
    c = client(server)
    runs = [
        c.chat.completions.create(
            model=model_id(server), messages=QUESTION, max_tokens=16, temperature=1.0, seed=seed
        ).choices[0].message.content
        for seed in (7, 7, 8)
    ]
    assert runs[0] == runs[1]


def test_tokenize_detokenize_round_trip(server):
    text = "Hello, tandem! 🚲"
    status, body, _ = server.post("/tokenize", {"content": text})
    assert status == 200 and all(isinstance(t, int) for t in body["tokens"])
    status, back, _ = server.post("/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and back["content"] == text
    status, pieces, _ = server.post("/tokenize", {"content": text, "with_pieces": True})
    assert [p["id"] for p in pieces["tokens"]] == body["tokens"]
    assert server.post("/detokenize", {"tokens": [10**9]})[0] == 400


def test_context_overflow_is_a_400_streaming_or_not(server):
    long = "word " * 1200  # past --ctx 1024
    for stream in (False, True):
        status, body, _ = server.post(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": long}], "stream": stream},
        )
        assert status == 400, body
        err = body["error"]
        assert err["type"] == "exceed_context_size_error" and err["n_ctx"] == 1024
        assert err["n_prompt_tokens"] > 1024
    status, body, _ = server.post("/v1/completions", {"prompt": "hi", "max_tokens": 5000})
    assert status == 400 and body["error"]["type"] == "exceed_context_size_error"
    # The server answers the next request.
    assert server.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})[0] == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"{}",
        b'{"messages": "hello"}',
        b'{"messages": []}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}',
        b'{"messages": [{"role": "user", "content": "hi"}], "method": "warp-drive"}',
        b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
    ],
)
def test_malformed_requests_are_400_with_an_openai_error(server, raw):
    status, body, _ = server.post("/v1/chat/completions", raw=raw)
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


def test_unknown_model_and_endpoint_are_404(server):
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="gpt-9", messages=QUESTION, max_tokens=2)
    assert server.get("/v1/nothing")[0] == 404


def test_api_key_is_required_except_for_health(guarded):
    assert guarded.get("/health")[0] == 200
    with pytest.raises(openai.AuthenticationError):
        client(guarded, "wrong").models.list()
    status, body, _ = guarded.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert client(guarded, "sesame").models.list().data


def test_cors_headers_only_when_enabled(server, guarded):
    origin = {"Origin": "http://app.example"}
    _, _, h = guarded.request("GET", "/health", headers=origin)
    assert h.get("access-control-allow-origin") == "http://app.example"
    _, _, h = guarded.request("GET", "/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in h}
    _, _, h = server.request("GET", "/health", headers=origin)
    assert "access-control-allow-origin" not in {k.lower() for k in h}


def test_a_cancelled_stream_frees_the_server_within_a_step(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 800, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    got = b""
    while got.count(b"data: ") < 3:
        got += r.read1(4096)
    conn.close()  # the client goes away mid-stream
    t0 = time.time()
    status, body, _ = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert status == 200
    # 800 tokens would take a minute on lavapipe; a freed server answers in a few steps.
    assert time.time() - t0 < 20, "the cancelled generation kept the server busy"


@pytest.mark.parametrize("method", ["lookup", "suffix", "hybrid", "recycle"])
def test_speculative_output_equals_plain(server, method):
    c = client(server)
    plain = c.chat.completions.create(model=model_id(server), messages=REPEAT, max_tokens=40)
    spec = c.chat.completions.create(
        model=model_id(server), messages=REPEAT, max_tokens=40,
        extra_body={"method": method, "speculative": {"n_max": 8}},
    )
    assert spec.choices[0].message.content == plain.choices[0].message.content
    extra = spec.model_extra["tandem"]
    assert extra["method"] == method and extra["speculative"]["n_max"] == 8
    if method != "recycle":  # recycling drafts from a table the first answer only starts
        assert extra["drafted"] > 0, extra


def test_a_drafter_method_without_a_drafter_model_is_a_400(server):
    with pytest.raises(openai.BadRequestError, match="needs a drafter model"):
        client(server).chat.completions.create(
            model=model_id(server), messages=QUESTION, max_tokens=4, extra_body={"method": "sps"}
        )


def test_drafter_chain_equals_plain(guarded):
    c = client(guarded, "sesame")
    mid = c.models.list().data[0].id
    plain = c.chat.completions.create(model=mid, messages=REPEAT, max_tokens=32, extra_body={"method": "plain"})
    sps = c.chat.completions.create(model=mid, messages=REPEAT, max_tokens=32)  # server default: sps
    assert sps.choices[0].message.content == plain.choices[0].message.content
    assert sps.model_extra["tandem"]["method"] == "sps"
    assert sps.model_extra["timings"]["draft_n_accepted"] > 0
    tree = c.chat.completions.create(
        model=mid, messages=REPEAT, max_tokens=32, extra_body={"method": "tree:nodes=8"}
    )
    assert tree.choices[0].message.content == plain.choices[0].message.content


def test_a_full_queue_answers_503_with_retry_after(guarded):
    key = {"Authorization": "Bearer sesame"}
    results = []

    def ask():
        results.append(guarded.post("/v1/completions", {"prompt": "Once", "max_tokens": 40}, headers=key))

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    codes = sorted(r[0] for r in results)
    assert 200 in codes and 503 in codes, codes
    busy = next(r for r in results if r[0] == 503)
    assert busy[2].get("retry-after") == "1" or busy[2].get("Retry-After") == "1"
    assert busy[1]["error"]["type"] == "unavailable_error"
    ok = [r[1]["choices"][0]["text"] for r in results if r[0] == 200]
    assert len(set(ok)) == 1, "every answered request got the same (greedy) text"


def test_metrics_counters_move(server):
    def value(text, name):
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = server.get("/metrics")[1].decode()
    client(server).chat.completions.create(
        model=model_id(server), messages=REPEAT, max_tokens=8, extra_body={"method": "lookup"}
    )
    after = server.get("/metrics")[1].decode()
    assert value(after, "tandem_tokens_predicted_total") > value(before, "tandem_tokens_predicted_total")
    assert value(after, 'tandem_method_requests_total{method="lookup"}') >= 1
    assert "# TYPE tandem_requests_deferred gauge" in after
