"""Hostile-load soak of zoo-serve on loopback (issue 27): memory flat, every good answer exact.

    PYTHONPATH=. python benchmarks/serve_soak.py [--seconds 600] [--concurrency 8] [--big-mb 300]

Starts `python -m zoo.serve models=[gpt-pydoc] threads=1` (the console script's module, default limits) on a
free loopback port. First the big bodies: `--big-mb` MB sent with a Content-Length, then as many chunked,
each on a raw socket, after resetting the server's peak RSS (`echo 5 > /proc/PID/clear_refs`); recorded:
the status, the bytes the client got to send before the server closed, and the peak RSS (VmHWM) growth.
Then the soak: `--concurrency` client threads send for `--seconds` a mix of good requests (a fixed set of
seeded and greedy text requests, plain and streamed; each answer must equal the one the same request got
alone, asked before the soak) and bad ones (a field out of range, malformed JSON, an unknown model, a
declared and a chunked body past the cap, a slow client that drips bytes then hangs up, a stream abandoned
after its first token); the server's RSS is sampled every second. RSS growth is the last tenth's maximum
over the maximum of the samples after the first tenth (the warm-up). Writes benchmarks/serve_soak.md (and
.json beside it); options that differ from their defaults are added to the name (`stem`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from zoo.bench.common import changed_options, cpu_name, output_stem

ROOT = Path(__file__).resolve().parents[1]
GOOD = [{"model": "gpt-pydoc", "prompt": p, "max_new_tokens": 8, **o}
        for p, o in itertools.product(["The assert statement", "def ", "import"],
                                      [{"temperature": 0}, {"temperature": 0.8, "top_k": 40, "seed": 7}])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(models: list[str], port: int) -> list[str]:
    return [sys.executable, "-m", "zoo.serve", f"port={port}", f"models=[{','.join(models)}]", "threads=1",
            "log_level=warning"]


@contextmanager
def serve_process(models: list[str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """zoo-serve in its own process (its RSS is then the server's alone); stopped on exit. Its log goes to a
    file, not a pipe: a pipe nobody reads fills up and then blocks the server's logging."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(serve_command(models, port), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=log, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180  # a busy 2-core machine: imports and loading take a while
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"zoo-serve did not start: {log.read() if proc.poll() else 'timeout'}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            errors = [line for line in log if "Traceback" in line or line.startswith("ERROR")]
            if errors:
                print(f"zoo-serve logged {len(errors)} errors, the first: {errors[0]}", file=sys.stderr)


@contextmanager
def live_app(app) -> Iterator[tuple[str, int]]:
    """An ASGI app behind a real uvicorn on a loopback port, in a thread of this process."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{server.config.port}", server.config.port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


# ---- one hostile request each -----------------------------------------------------------------

def _head(port: int, extra: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"POST /v1/generate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{extra}\r\n"
              .encode())
    return s


def send_big(port: int, nbytes: int, chunked: bool) -> tuple[int, int]:
    """Try to send an `nbytes` JSON body (declared, or chunked); (HTTP status or 0, bytes the client got out)."""
    s = _head(port, "transfer-encoding: chunked\r\n" if chunked else f"content-length: {nbytes}\r\n")
    sent, reply = 0, bytearray()

    def read() -> None:
        try:
            while b"\r\n" not in reply:
                piece = s.recv(4096)
                if not piece:
                    return
                reply.extend(piece)
        except OSError:
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    block = b'{"model": "gpt-pydoc", "prompt": "' + b"x" * (2**20 - 36)
    try:
        while sent < nbytes and reader.is_alive():
            piece = block if sent == 0 else b"x" * 2**20
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
    except OSError:  # the server answered and closed: the rest is never read
        pass
    reader.join(timeout=30)
    s.close()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, sent


def big_body_figures(url: str, pid: int, mb: int = 300) -> dict:
    """For a declared and a chunked `mb` MB body: status, MB sent before the close, peak RSS growth (MiB)."""
    port = int(url.rsplit(":", 1)[1])
    figures = {}
    for kind in ("declared", "chunked"):
        rss = status_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak below is this request's
        status, sent = send_big(port, mb * 10**6, chunked=kind == "chunked")
        time.sleep(0.5)
        figures[kind] = {"status": status, "client_sent_mb": round(sent / 1e6, 1),
                         "rss_before_mib": round(rss / 1024, 1),
                         "peak_growth_mib": round((status_kib(pid, "VmHWM") - rss) / 1024, 1)}
    return figures


def bad_request(client: httpx.Client, port: int, kind: str, cap: int) -> int | None:
    """One bad request of `kind`; the status it got (None where the client hangs up on purpose)."""
    if kind == "out_of_range":
        return client.post("/v1/generate", json={"model": "gpt-pydoc", "max_new_tokens": 10**6}).status_code
    if kind == "malformed":
        return client.post("/v1/generate", content=b'{"model": "gpt-pydoc",',
                           headers={"content-type": "application/json"}).status_code
    if kind == "unknown_model":
        return client.post("/v1/generate", json={"model": "nope"}).status_code
    if kind == "declared_too_big":
        s = _head(port, "content-length: 300000000\r\n")
        try:
            return int(s.recv(64).split(b" ", 2)[1])
        finally:
            s.close()
    if kind == "chunked_too_big":
        return client.post("/v1/generate", content=(b"x" * 65536 for _ in range(cap // 65536 + 2)),
                           headers={"content-type": "application/json"}).status_code
    if kind == "slow_then_gone":
        s = _head(port, "content-length: 1000\r\n")
        for _ in range(3):
            s.send(b" ")
            time.sleep(0.5)
        s.close()
        return None
    if kind == "stream_abandoned":
        with client.stream("POST", "/v1/generate", json={**GOOD[0], "max_new_tokens": 64, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("event: token"):
                    break
        return None
    raise ValueError(kind)


BAD = ["out_of_range", "malformed", "unknown_model", "declared_too_big", "chunked_too_big", "slow_then_gone",
       "stream_abandoned"]
EXPECTED = {"out_of_range": 422, "malformed": 422, "unknown_model": 404, "declared_too_big": 413,
            "chunked_too_big": 413, "slow_then_gone": None, "stream_abandoned": None}


def answer(r: httpx.Response) -> dict:
    body = r.json()
    return {"status": r.status_code, "result": body.get("result"), "seed": body.get("seed")}


def streamed(client: httpx.Client, body: dict) -> dict:
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    done = json.loads(events[-1][6:])
    return {"status": r.status_code, "result": done.get("result"), "seed": done.get("seed")}


def soak(url: str, pid: int, *, seconds: float, concurrency: int, seed: int = 0) -> dict:
    """Mixed good and bad requests for `seconds` from `concurrency` threads; counts, wrong answers, RSS."""
    from zoo.members.serving import Limits

    port, cap = int(url.rsplit(":", 1)[1]), Limits().body_bytes()
    with httpx.Client(base_url=url, timeout=120) as c:  # each good request made alone first
        alone = {i: answer(c.post("/v1/generate", json=b)) for i, b in enumerate(GOOD)}
        alone_streamed = {i: streamed(c, b) for i, b in enumerate(GOOD)}
    counts: Counter[str] = Counter()
    wrong: list[dict] = []
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - start, status_kib(pid, "VmRSS")))
            stop.wait(1.0)

    def client_loop(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() - start < seconds:
                i = rng.randrange(len(GOOD))
                roll = rng.random()
                try:
                    if roll < 0.4:
                        got, want, kind = answer(c.post("/v1/generate", json=GOOD[i])), alone[i], "good"
                    elif roll < 0.5:
                        got, want, kind = streamed(c, GOOD[i]), alone_streamed[i], "good_stream"
                    else:
                        kind = rng.choice(BAD)
                        got, want = bad_request(c, port, kind, cap), EXPECTED[kind]
                except (httpx.HTTPError, OSError, ValueError) as e:
                    got, want, kind = repr(e), "an answer", kind if roll >= 0.5 else "good"
                counts[kind] += 1
                if got != want:
                    wrong.append({"kind": kind, "got": got, "want": want})

    threads = [threading.Thread(target=sample, daemon=True)]
    threads += [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    tenth = max(len(samples) // 10, 1)
    settled = max(kib for _, kib in samples[tenth:-tenth] or samples)
    final = max(kib for _, kib in samples[-tenth:])
    alive = httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    return {"seconds": round(time.monotonic() - start, 1), "concurrency": concurrency,
            "good": counts["good"] + counts["good_stream"], "bad": sum(counts[k] for k in BAD),
            "by_kind": dict(counts), "wrong": wrong, "server_alive": alive,
            "rss_mib": {"first": round(samples[0][1] / 1024, 1), "after_warmup_max": round(settled / 1024, 1),
                        "last_tenth_max": round(final / 1024, 1)},
            "rss_growth": round(final / settled - 1, 4)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--big-mb", type=int, default=300)
    p.add_argument("--out", type=Path, default=None,
                   help="the .md (a .json beside it); default: benchmarks/<stem>.md (`stem`)")
    return p


def stem(args: argparse.Namespace) -> str:
    return output_stem("serve_soak", changed_options(parser(), args, ignore=["out"]))


def main() -> None:
    args = parser().parse_args()
    out = args.out or ROOT / "benchmarks" / f"{stem(args)}.md"
    with serve_process(["gpt-pydoc"]) as (url, proc):
        big = big_body_figures(url, proc.pid, args.big_mb)
        result = soak(url, proc.pid, seconds=args.seconds, concurrency=args.concurrency)
    record = {"big_body": big, "soak": {**result, "wrong": result["wrong"][:20], "wrong_count": len(result["wrong"])},
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
              "command": "PYTHONPATH=. python benchmarks/serve_soak.py " + " ".join(sys.argv[1:])}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    rows = "\n".join(f"| {k} ({args.big_mb} MB) | {v['status']} | {v['client_sent_mb']} | {v['rss_before_mib']} | "
                     f"{v['peak_growth_mib']} |" for k, v in big.items())
    r = result
    out.write_text(f"""# zoo-serve under hostile load

`{record['command'].strip()}` on {record['machine']['cpu']} ({record['machine']['cores']} cores), loopback, one
`python -m zoo.serve models=[gpt-pydoc] threads=1` process with the default limits (`limits.max_body_bytes`
sized from the other caps: {__import__('zoo.members.serving', fromlist=['Limits']).Limits().body_bytes()} bytes).

## One oversized body

| Body | Status | MB the client got out before the close | Server RSS before (MiB) | Peak RSS growth (MiB) |
|---|---|---|---|---|
{rows}

## Soak: {r['seconds']} s, {r['concurrency']} client threads

{r['good']} good requests (plain and streamed; each compared with the same request made alone) and {r['bad']}
bad ones ({', '.join(f'{k} {v}' for k, v in sorted(r['by_kind'].items()) if k in BAD)}).
Wrong answers: {len(r['wrong'])}. Server alive at the end: {r['server_alive']}.
Server RSS (MiB): {r['rss_mib']['first']} at the start, {r['rss_mib']['after_warmup_max']} at most after the first
tenth, {r['rss_mib']['last_tenth_max']} at most in the last tenth: growth {100 * r['rss_growth']:.2f} %.
""")
    print(out.read_text())
    if r["wrong"] or not r["server_alive"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
