"""A bounded load test on loopback: 16 concurrent streaming clients × 3 requests each with
mixed methods. Every response is complete and equal to the same request answered alone
(greedy), none is lost, the server's memory is back near where it was after a warm-up round,
and the latency percentiles and throughput are printed (BENCHMARKS.md has a run)."""

import statistics
import threading
import time

import openai

from conftest import rss_kib

METHODS = ["plain", "lookup", "suffix", "hybrid"]
CLIENTS = 16
ROUNDS = 3
MAX_TOKENS = 8


def prompt(i):
    return f"{i}, {i + 1}, {i + 2},"


def test_sixteen_streaming_clients_get_complete_unmixed_answers(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    mid = c.models.list().data[0].id
    distinct = range(CLIENTS)

    def ask(i, method, stream):
        r = c.completions.create(
            model=mid, prompt=prompt(i), max_tokens=MAX_TOKENS, stream=stream,
            extra_body={"method": method},
        )
        if not stream:
            return r.choices[0].text, r.choices[0].finish_reason
        text, finish = "", None
        for ch in r:
            text += ch.choices[0].text
            finish = ch.choices[0].finish_reason or finish
        return text, finish

    alone = {i: ask(i, "plain", False) for i in distinct}
    rss_warm = rss_kib(server.proc.pid)

    results, latencies, errors = [], [], []
    lock = threading.Lock()

    def client(i):
        for r in range(ROUNDS):
            method = METHODS[(i + r) % len(METHODS)]
            t0 = time.time()
            try:
                got = ask(i, method, True)
            except Exception as e:  # every failure is reported below, none is lost silently
                with lock:
                    errors.append(f"client {i} round {r} ({method}): {e!r}")
                continue
            with lock:
                latencies.append(time.time() - t0)
                results.append((i, method, got))

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in distinct]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    assert not errors, errors
    assert len(results) == CLIENTS * ROUNDS, "no request is lost"
    for i, method, got in results:
        assert got == alone[i], f"client {i} with {method}: {got!r} != alone {alone[i]!r}"
    rss_after = rss_kib(server.proc.pid)
    growth_mib = (rss_after - rss_warm) / 1024
    lat = sorted(latencies)
    metrics = server.get("/metrics")[1].decode().splitlines()
    tokens = next(float(l.split()[1]) for l in metrics if l.startswith("tandem_tokens_predicted_total "))
    print(
        f"\nload: {CLIENTS} clients x {ROUNDS} streamed requests ({MAX_TOKENS} tokens max, methods {METHODS}): "
        f"wall {wall:.1f} s, p50 {statistics.median(lat):.2f} s, p95 {lat[int(0.95 * (len(lat) - 1))]:.2f} s, "
        f"{sum(len(g[0]) for _, _, g in results)} characters, server total {tokens:.0f} tokens predicted; "
        f"RSS {rss_warm / 1024:.0f} MiB after warm-up, {rss_after / 1024:.0f} MiB after (+{growth_mib:.1f})"
    )
    # Conversations are kept (--parallel 4) and were opened in the warm-up round already.
    assert growth_mib < 64, f"server memory grew by {growth_mib:.1f} MiB under load"
