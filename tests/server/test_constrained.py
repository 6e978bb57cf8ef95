"""Constrained decoding through `tandem serve`: OpenAI's `response_format` (json_object,
json_schema) and tandem's `grammar` / `regex` fields. Every answer to the 20 schemas of
tests/fixtures/json-schemas.jsonl parses and validates (the `jsonschema` package, not
tandem's own grammar engine, is the judge), a speculative method gives plain decoding's text,
forced drafts raise τ, and a bad schema is a 400 before any streaming starts."""

import json
from pathlib import Path

import jsonschema
import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = [json.loads(l) for l in (ROOT / "tests/fixtures/json-schemas.jsonl").read_text().splitlines() if l]
# Each schema with plain decoding and one speculative method, in turn.
OTHERS = ["lookup", "hybrid", "suffix", "recycle"]


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def ask(server, messages, **kw):
    c = client(server)
    return c.chat.completions.create(model=c.models.list().data[0].id, messages=messages, **kw)


def fmt(case):
    return {"type": "json_schema", "json_schema": {"name": case["name"], "schema": case["schema"], "strict": True}}


def test_twenty_schemas_validate_and_speculation_changes_nothing(server):
    assert len(SCHEMAS) >= 20
    taus = []
    for i, case in enumerate(SCHEMAS):
        messages = [{"role": "user", "content": case["prompt"]}]
        plain = ask(server, messages, max_tokens=128, response_format=fmt(case), extra_body={"method": "plain"})
        text = plain.choices[0].message.content
        assert plain.choices[0].finish_reason == "stop", f"{case['name']}: cut at max_tokens: {text!r}"
        jsonschema.validate(json.loads(text), case["schema"])
        other = OTHERS[i % len(OTHERS)]
        spec = ask(server, messages, max_tokens=128, response_format=fmt(case), extra_body={"method": other})
        assert spec.choices[0].message.content == text, f"{case['name']}: {other} differs from plain"
        taus.append(plain.model_extra["tandem"]["stats"]["mean_accepted_tokens"])
    # The keys and punctuation the schemas force are drafted: τ above 1 with plain decoding.
    assert sum(taus) / len(taus) > 1.5, taus


def test_json_object_streams_one_object(server):
    chunks = list(
        ask(
            server,
            [{"role": "user", "content": 'Reply with this JSON object: {"name": "Tom", "animal": "cat"}'}],
            max_tokens=96,
            stream=True,
            response_format={"type": "json_object"},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].choices[0].finish_reason == "stop", text
    assert isinstance(json.loads(text), dict)


def test_grammar_and_regex_fields(server):
    q = [{"role": "user", "content": "Is the sky blue?"}]
    r = ask(server, q, max_tokens=8, extra_body={"regex": "(yes|no), (really|maybe)"})
    assert r.choices[0].message.content in {f"{a}, {b}" for a in ("yes", "no") for b in ("really", "maybe")}
    g = 'start: answer "!"\nanswer: "yes" | "no"'
    r = ask(server, q, max_tokens=8, extra_body={"grammar": g})
    assert r.choices[0].message.content in ("yes!", "no!")


@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_schema_is_a_400(server, stream):
    bad = [
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 17}}}},
        {"response_format": {"type": "yaml"}},
        {"response_format": {"type": "json_schema"}},
        {"regex": "(unclosed"},
        {"grammar": "start: missing_rule"},
        {"regex": "a", "grammar": 'start: "a"'},
    ]
    for body in bad:
        status, r, _ = server.post(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": stream, **body},
        )
        assert status == 400, (body, r)
        assert r["error"]["type"] == "invalid_request_error", r
    # The server still answers.
    assert ask(server, [{"role": "user", "content": "Hi"}], max_tokens=2).choices[0].message.content is not None


def test_contrastive_decoding(server, guarded):
    q = [{"role": "user", "content": "Name three colours of the rainbow."}]
    # Without a drafter there is no amateur: a 400 before anything streams.
    for stream in (False, True):
        status, r, _ = server.post(
            "/v1/chat/completions",
            {"messages": q, "max_tokens": 4, "stream": stream, "contrastive": {"alpha": 0.1, "beta": 0.5}},
        )
        assert status == 400 and "drafter" in r["error"]["message"], r
    # SmolLM2 as its own amateur: (1 - β)·log p keeps the argmax, so the greedy text is plain
    # greedy decoding's, with every method; out-of-range parameters are a 400.
    c = openai.OpenAI(base_url=guarded.url + "/v1", api_key="sesame", max_retries=0)
    mid = c.models.list().data[0].id
    plain = c.chat.completions.create(model=mid, messages=q, max_tokens=16, extra_body={"method": "plain"})
    for method in ("plain", "sps", "lookup"):
        r = c.chat.completions.create(
            model=mid, messages=q, max_tokens=16,
            extra_body={"method": method, "contrastive": {"alpha": 0.1, "beta": 0.5}},
        )
        assert r.choices[0].message.content == plain.choices[0].message.content, method
    for bad in ({"alpha": 0}, {"beta": -1}, {"gamma": 1}):
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model=mid, messages=q, max_tokens=2, extra_body={"contrastive": bad})
