#!/usr/bin/env python3
"""Contrastive decoding's quality, measured: Spec-Bench's math_reasoning questions (GSM8K,
with a reference answer after '####') answered greedily by the target alone and by
contrastive decoding with the drafter model as the amateur, side by side through one
`tandem serve` (started here, stopped at the end). An answer counts as correct when the last
number in it equals the reference. Prints the command, the adapter, both accuracies and each
question's two answers' final numbers as Markdown.

  scripts/bench-contrastive.py -m qwen-1.5b -d qwen-0.5b --limit 6 --alpha 0.1 --beta 0.5
"""

import argparse
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=3600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def last_number(text):
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    if not nums:
        return None
    n = nums[-1].replace(",", "").rstrip(".")
    try:
        v = float(n)
    except ValueError:
        return None
    return int(v) if v == int(v) else v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default="qwen-1.5b")
    ap.add_argument("-d", "--drafter", default="qwen-0.5b")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "tandem"))
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("-n", "--max-tokens", type=int, default=256)
    ap.add_argument("--method", default="plain", help="drafting method of both runs")
    args = ap.parse_args()
    qs = [json.loads(l) for l in (ROOT / "benchmarks/specbench/questions.jsonl").read_text().splitlines() if l]
    qs = [q for q in qs if q["category"] == "math_reasoning" and q.get("reference")][: args.limit]
    port = free_port()
    log = open("/tmp/bench-contrastive-server.log", "w")
    proc = subprocess.Popen(
        [args.bin, "serve", "-m", args.model, "--drafter", args.drafter, "--port", str(port), "--ctx", "1024"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        models = json.loads(urllib.request.urlopen(url + "/v1/models").read())
        adapter = models["data"][0].get("meta", {}).get("adapter", {})
        rows, right = [], {"plain": 0, "contrastive": 0}
        for q in qs:
            want = last_number(q["reference"][0].split("####")[-1])
            got = {}
            for mode in ("plain", "contrastive"):
                body = {
                    "messages": [{"role": "user", "content": q["turns"][0] + " Think step by step, then give the final number."}],
                    "max_tokens": args.max_tokens, "method": args.method,
                }
                if mode == "contrastive":
                    body["contrastive"] = {"alpha": args.alpha, "beta": args.beta}
                r = post(url + "/v1/chat/completions", body)
                text = r["choices"][0]["message"]["content"]
                got[mode] = (last_number(text), r["choices"][0]["finish_reason"], r["tandem"]["stats"]["decode_tokens_per_s"])
                right[mode] += got[mode][0] == want
                print(f"q{q['question_id']} {mode}: {got[mode]} want {want}", file=sys.stderr)
            rows.append((q["question_id"], want, got))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    n = len(rows)
    print(f"`{' '.join(sys.argv)}` — {n} math_reasoning questions, greedy, max {args.max_tokens} tokens, "
          f"method {args.method}; adapter {adapter.get('name', '?')} ({adapter.get('backend', '?')})\n")
    print(f"| | accuracy | decode tok/s (mean) |\n|---|---|---|")
    for mode in ("plain", "contrastive"):
        tps = sum(g[mode][2] for _, _, g in rows) / max(n, 1)
        label = "target alone" if mode == "plain" else f"contrastive (α {args.alpha}, β {args.beta})"
        print(f"| {label} | {right[mode]}/{n} | {tps:.2f} |")
    print("\n| question | reference | target alone | contrastive |\n|---|---|---|---|")
    for qid, want, got in rows:
        cell = lambda g: f"{g[0]}{'' if g[1] == 'stop' else ' (cut)'}"
        print(f"| {qid} | {want} | {cell(got['plain'])} | {cell(got['contrastive'])} |")


if __name__ == "__main__":
    main()
