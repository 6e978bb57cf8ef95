#!/usr/bin/env python3
"""Grammar-forced drafts measured: each JSON schema of tests/fixtures/json-schemas.jsonl (or
the first --limit) answered by `tandem run --chat --json-schema` with plain constrained
decoding (no forced drafts), with forced drafts, and with each --methods, side by side in one
run. Prints a Markdown table: τ, decode tokens/s, the speed-up over the first column, and
the host time of the token masks per step; checks that every method gave the first column's
tokens. Needs the tandem binary (--bin, default target/release/tandem) and the model.

  scripts/bench-constrained.py -m qwen-1.5b --limit 5 --methods hybrid
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default="smollm2")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "tandem"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--methods", default="hybrid", help="comma-separated methods after plain")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--drafter", default=None)
    args = ap.parse_args()
    cases = [json.loads(l) for l in (ROOT / "tests/fixtures/json-schemas.jsonl").read_text().splitlines() if l]
    cases = cases[: args.limit]
    runs = [("plain, no forced drafts", "plain", False), ("plain + forced drafts", "plain", True)]
    runs += [(f"{m} + forced drafts", m, True) for m in args.methods.split(",") if m]
    totals = {name: {"tokens": 0, "passes": 0, "seconds": 0.0, "mask": 0.0} for name, _, _ in runs}
    print(f"command: {' '.join(sys.argv)}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            schema = Path(tmp) / f"{case['name']}.json"
            schema.write_text(json.dumps(case["schema"]))
            first = None
            for name, method, forced in runs:
                cmd = [args.bin, "run", "-m", args.model, "--chat", "-p", case["prompt"], "-n", str(args.max_tokens),
                       "--json-schema", str(schema), "--method", method, "--json", "--ctx", "1024"]
                if not forced:
                    cmd.append("--no-forced-drafts")
                if args.drafter:
                    cmd += ["--drafter", args.drafter]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed: {out.stderr}")
                if "adapter" not in totals:
                    line = [l for l in out.stderr.splitlines() if l.startswith("[") and " on " in l][:1]
                    totals["adapter"] = line[0] if line else "?"
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if first is None:
                    first = r["tokens"]
                elif r["tokens"] != first:
                    sys.exit(f"{case['name']}: {name} gave other tokens than {runs[0][0]}")
                s = r["stats"]
                t = totals[name]
                t["tokens"] += s["generated_tokens"]
                t["passes"] += s["target_passes"]
                t["seconds"] += s["decode_seconds"]
                t["mask"] += s["mask_seconds"]
            print(f"{case['name']}: {json.loads(r['text']) if r['stop_reason'] == 'eos' else r['text']!r}", file=sys.stderr)
    print(f"`{' '.join(sys.argv)}` — {len(cases)} schemas, model {args.model}; {totals.pop('adapter')}\n")
    print("| run | tokens | target passes | τ | decode tok/s | speed-up | masks µs/step |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for name, _, _ in runs:
        t = totals[name]
        tps = t["tokens"] / max(t["seconds"], 1e-9)
        base = base or tps
        print(f"| {name} | {t['tokens']} | {t['passes']} | {t['tokens'] / max(t['passes'], 1):.2f} | {tps:.2f} "
              f"| {tps / base:.2f}× | {1e6 * t['mask'] / max(t['passes'], 1):.0f} |")


if __name__ == "__main__":
    main()
