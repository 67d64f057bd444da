"""Load test of zoo-serve on loopback: nothing dropped or duplicated, memory flat, latency percentiles.

    PYTHONPATH=. python benchmarks/serve_load.py [--requests 200] [--concurrency 16] [--max-new-tokens 8]

Issue 18. Starts `python -m zoo.serve models=[gpt-pydoc] threads=1` (the zoo-serve console script's module)
on a free loopback port, warms it up with `concurrency` requests, reads the server's RSS
(/proc/PID/status VmRSS), then sends `--requests` POST /v1/generate requests, `--concurrency` at a time,
from one asyncio client (httpx). Request i has id `req-i` and its own prompt; even i are greedy
(temperature 0, batchable), odd i are sampled with seed i (they run alone). Every answer is checked:
status 200, the id and seed of its own request, its own prompt, and exactly the text that prompt and
options give through `zoo.load("gpt-pydoc").generate(...)` in this process (computed after the load
phase, so that it does not compete for the CPU). The server's RSS is read again after the run; the
server is stopped in any case. Writes benchmarks/serve_load.md (and .json beside it); options that differ from
their defaults are added to the name (--requests 50: serve_load_requests-50.md; `stem`, issue 22).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from zoo.bench.common import changed_options, cpu_name, output_stem

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["with", "assert", "del", "pass", "raise", "return", "yield", "import", "global", "if", "while", "for", "try"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def request(i: int, max_new_tokens: int) -> dict:
    body = {"model": "gpt-pydoc", "id": f"req-{i}", "prompt": f"The {WORDS[i % len(WORDS)]} statement {i}",
            "max_new_tokens": max_new_tokens}
    if i % 2 == 0:
        body |= {"temperature": 0}
    else:
        body |= {"temperature": 0.8, "top_k": 40, "seed": i}
    return body


async def load(url: str, bodies: list[dict], concurrency: int) -> list[tuple[dict, int, dict | str, float]]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def one(body: dict) -> tuple[dict, int, dict | str, float]:
            async with sem:
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/generate", json=body)
                    out: dict | str = r.json() if r.headers.get("content-type", "").startswith("application/json") \
                        else r.text
                    status = r.status_code
                except httpx.HTTPError as e:
                    out, status = f"{type(e).__name__}: {e}", -1
                return body, status, out, time.perf_counter() - start

        return await asyncio.gather(*(one(b) for b in bodies))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None,
                    help="the .md (a .json beside it); default: benchmarks/<stem>.md (`stem`)")
    return ap


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix) without --out: serve_load, then each option that differs from its default."""
    return output_stem("serve_load", changed_options(parser(), args, ignore=["out"]))


def main() -> None:
    args = parser().parse_args()
    if args.out is None:
        args.out = ROOT / "benchmarks" / f"{stem(args)}.md"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "zoo.serve", f"port={port}", "models=[gpt-pydoc]", "threads=1", "log_level=warning"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"zoo-serve did not start: {server.stderr.read() if server.poll() else 'timeout'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        warm = [request(10_000 + i, args.max_new_tokens) for i in range(args.concurrency)]
        asyncio.run(load(url, warm, args.concurrency))
        rss_before = rss_mib(server.pid)
        bodies = [request(i, args.max_new_tokens) for i in range(args.requests)]
        start = time.perf_counter()
        results = asyncio.run(load(url, bodies, args.concurrency))
        wall = time.perf_counter() - start
        rss_after = rss_mib(server.pid)
        served = httpx.get(f"{url}/healthz").json()["served"]["gpt-pydoc"]
        load_avg = os.getloadavg()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    import torch

    import zoo

    torch.set_num_threads(1)
    m = zoo.load("gpt-pydoc")
    failed, wrong, ids = [], [], []
    for body, status, out, _ in results:
        if status != 200 or not isinstance(out, dict):
            failed.append((body["id"], status, str(out)[:200]))
            continue
        ids.append(out["id"])
        opts = {k: v for k, v in body.items() if k not in ("model", "id", "prompt")}
        expected = m.generate(body["prompt"], **opts)
        if (out["id"], out["seed"], out["result"]["prompt"], out["result"]["text"]) != \
                (body["id"], body.get("seed"), body["prompt"], expected):
            wrong.append((body["id"], out["id"], out["result"]["text"], expected))
    sent = {b["id"] for b in bodies}
    duplicated = len(ids) - len(set(ids))
    missing = sorted(sent - set(ids))
    lat = sorted(r[3] * 1000 for r in results)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))]

    summary = {
        "requests": args.requests, "concurrency": args.concurrency, "max_new_tokens": args.max_new_tokens,
        "ok": len(ids), "failed": len(failed), "missing": len(missing), "duplicated": duplicated,
        "wrong_answer": len(wrong), "wall_s": round(wall, 2), "requests_per_s": round(args.requests / wall, 1),
        "latency_ms": {"p50": round(pct(50), 1), "p90": round(pct(90), 1), "p99": round(pct(99), 1),
                       "max": round(lat[-1], 1), "mean": round(statistics.fmean(lat), 1)},
        "server_rss_mib": {"before": round(rss_before, 1), "after": round(rss_after, 1),
                           "delta": round(rss_after - rss_before, 1)},
        "server_batches": served, "cpu": cpu_name(), "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(load_avg[0], 2), "python": platform.python_version(),
        "torch": torch.__version__, "failures": failed[:5], "wrong_answers": wrong[:5],
    }
    print(json.dumps(summary, indent=2))
    args.out.with_name(args.out.name.removesuffix(".md") + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = not (failed or missing or duplicated or wrong)
    lines = [
        "# zoo-serve load test (loopback)",
        "",
        f"Command: `PYTHONPATH=. python benchmarks/serve_load.py --requests {args.requests} --concurrency "
        f"{args.concurrency} --max-new-tokens {args.max_new_tokens}` (issue 18; method in the script's docstring).",
        "",
        f"Machine: {summary['cpu']}, {summary['cpus']} CPUs, shared with other jobs (1-minute load average "
        f"{summary['load_average_1m_at_end']} at the end of the run); server `zoo-serve models=[gpt-pydoc] threads=1`, "
        f"CPU, float32; Python {summary['python']}, torch {summary['torch']}.",
        "",
        f"Requests: {args.requests}, {args.concurrency} in flight at a time, {args.max_new_tokens} new tokens each; "
        "even ids greedy (batchable), odd ids sampled with seed = id (run alone).",
        "",
        "| check | result |",
        "| --- | --- |",
        f"| answered 200 | {len(ids)} / {args.requests} |",
        f"| dropped (failed or missing) | {len(failed)} failed, {len(missing)} missing |",
        f"| duplicated ids | {duplicated} |",
        f"| answer differs from the request's own (id, seed, prompt, text = `zoo.load(...).generate` alone) "
        f"| {len(wrong)} |",
        f"| server RSS before / after (MiB) | {summary['server_rss_mib']['before']} / "
        f"{summary['server_rss_mib']['after']} (Δ {summary['server_rss_mib']['delta']:+}) |",
        f"| generate calls for {served['requests']} requests (incl. {args.concurrency} warm-up) "
        f"| {served['batches']} |",
        "",
        "| latency (ms) | p50 | p90 | p99 | max | mean |",
        "| --- | --- | --- | --- | --- | --- |",
        "| POST /v1/generate | "
        + " | ".join(str(summary["latency_ms"][k]) for k in ("p50", "p90", "p99", "max", "mean")) + " |",
        "",
        f"Throughput: {summary['requests_per_s']} requests/s ({summary['wall_s']} s wall for {args.requests}).",
        "",
        "Latency includes queueing: with 16 in flight on one worker thread, a request waits for the ones ahead "
        "of it; greedy requests with equal options share a batched generate call, seeded sampled ones run alone.",
        "",
        f"Verdict: {'PASS' if ok else 'FAIL'}: nothing dropped or duplicated, every answer its own request's.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
