"""zoo-serve's HTTP API (issue 18), in-process with FastAPI's TestClient / httpx, plus the `curl` examples of
docs/serving.md against a live `python -m zoo.serve` (the console script's module) on loopback.

Small on purpose: every generation asks for a handful of tokens or images from the shipped models.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="zoo-serve needs the [serve] extra")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import zoo  # noqa: E402
from zoo.serve import Limits, ServeSettings, create_app, load_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["gpt-pydoc", "image-gpt-digits", "music-transformer-bach", "text2image-digits"]


@pytest.fixture(scope="module")
def models():
    return load_models(NAMES)


@pytest.fixture
def client(models):
    with TestClient(create_app(models, ServeSettings(timeout_s=60))) as c:  # the lifespan stops the workers
        yield c


def post(client: TestClient, **body) -> httpx.Response:
    return client.post("/v1/generate", json=body)


def notes(path: Path) -> list[tuple]:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    return [(n.pitch, n.velocity, round(n.start, 4), round(n.end, 4)) for i in pm.instruments for n in i.notes]


def png_size(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


# ---- GET /v1/models -----------------------------------------------------------------------------
def test_models_lists_member_codec_card_metric_and_option_ranges(client, models):
    loaded, models = models, {m["name"]: m for m in client.get("/v1/models").json()["data"]}
    assert list(models) == NAMES
    assert {n: (m["member"], m["codec"]) for n, m in models.items()} == {
        "gpt-pydoc": ("text", "char"), "image-gpt-digits": ("image", "image_patch"),
        "music-transformer-bach": ("music", "midi_performance"), "text2image-digits": ("text2image", "text_image")}
    text = models["gpt-pydoc"]
    assert text["card"]["metric_value"] == pytest.approx(1.1525) and "val loss" in text["card"]["metric"]
    assert text["streams"] and not models["image-gpt-digits"]["streams"]
    assert set(text["inputs"]) == {"prompt", "num_samples", "stop"}
    mnt = text["options"]["max_new_tokens"]
    assert (mnt["minimum"], mnt["maximum"]) == (1, Limits().max_new_tokens)
    assert mnt["default"] == loaded["gpt-pydoc"].generation["max_new_tokens"] == 200  # the checkpoint's default
    assert text["options"]["top_p"]["exclusiveMinimum"] == 0 and text["options"]["top_p"]["nullable"]
    assert text["options"]["top_k"]["maximum"] == 103  # the char vocabulary
    image = models["image-gpt-digits"]["options"]  # the checkpoint's sampling defaults, as the Python API uses them
    assert image["guidance"]["default"] == loaded["image-gpt-digits"].generation["guidance"] == 2.0
    assert "primer" in models["music-transformer-bach"]["inputs"]
    assert set(models["music-transformer-bach"]["outputs"]) == {"midi", "wav", "piano_roll_png"}


# ---- POST /v1/generate, one member at a time -----------------------------------------------------
def test_text_echoes_id_and_seed_and_equals_the_python_api(client):
    opts = {"max_new_tokens": 12, "temperature": 0.8, "top_k": 40, "seed": 7}
    r = post(client, model="gpt-pydoc", id="req-1", prompt="The with", **opts)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["model"], body["seed"], body["member"]) == ("req-1", "gpt-pydoc", 7, "text")
    expected = zoo.load("gpt-pydoc").generate("The with", **opts)
    assert body["result"]["text"] == expected and body["result"]["completions"] == [expected[len("The with"):]]
    again = post(client, model="gpt-pydoc", prompt="The with", **opts).json()
    assert again["result"]["text"] == expected and again["id"] != "req-1"  # a fresh id when none is given


def test_text_stream_sends_tokens_then_done_with_the_same_text(client):
    body = {"model": "gpt-pydoc", "id": "s1", "prompt": "The with", "max_new_tokens": 10, "seed": 3, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [(re.search(r"^event: (.*)$", b, re.M)[1], json.loads(re.search(r"^data: (.*)$", b, re.M)[1]))
                  for b in r.read().decode().split("\n\n") if b.strip()]
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"token"}, kinds
    streamed = "".join(d["text"] for k, d in events if k == "token")
    done = events[-1][1]
    assert done["id"] == "s1" and done["result"]["completions"] == [streamed] and len(streamed) >= 5
    plain = post(client, model="gpt-pydoc", prompt="The with", max_new_tokens=10, seed=3).json()
    assert plain["result"]["text"] == "The with" + streamed


def test_images_come_back_as_one_png_grid(client):
    r = post(client, model="image-gpt-digits", labels=[3, "7"], num_samples=2, seed=0)
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["shape"] == [4, 1, 8, 8] and res["rows"] == 2
    w, h = png_size(res["png"])
    assert w == h > 16  # two rows of two upscaled digits
    r = post(client, model="text2image-digits", caption="a 3 on the left and a 7 on the right", num_samples=2,
             guidance=1, seed=0)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["shape"] == [2, 1, 8, 16] and png_size(r.json()["result"]["png"])[0] > 16


def test_music_comes_back_as_midi_wav_and_piano_roll(client, tmp_path):
    import pretty_midi

    r = post(client, model="music-transformer-bach", max_new_tokens=48, seed=0)
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    (tmp_path / "x.mid").write_bytes(base64.b64decode(res["midi"]))
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "x.mid"))
    assert sum(len(i.notes) for i in pm.instruments) == res["notes"]
    assert base64.b64decode(res["wav"])[:4] == b"RIFF" and png_size(res["piano_roll_png"])[0] > 100
    # ... and continues a primer sent as base64 MIDI
    r = post(client, model="music-transformer-bach", primer=res["midi"], max_new_tokens=16, seed=1, audio=False)
    assert r.status_code == 200, r.text
    assert "wav" not in r.json()["result"] and r.json()["result"]["notes"] >= res["notes"] > 0
    (tmp_path / "served.mid").write_bytes(base64.b64decode(r.json()["result"]["midi"]))
    zoo.load("music-transformer-bach").generate(tmp_path / "x.mid", max_new_tokens=16, seed=1, out=tmp_path / "api.mid")
    assert notes(tmp_path / "served.mid") == notes(tmp_path / "api.mid")  # the Python API's continuation


# ---- bad input: 4xx JSON naming the field and the accepted range ----------------------------------
@pytest.mark.parametrize(("body", "status", "field", "accepted"), [
    ({"model": "nope"}, 404, "model", "gpt-pydoc"),
    ({"model": 3}, 422, "model", "gpt-pydoc"),
    ({}, 422, "model", "gpt-pydoc"),
    ({"model": "gpt-pydoc", "temperatur": 1.0}, 422, "temperatur", "temperature"),
    ({"model": "gpt-pydoc", "max_new_tokens": 100_000}, 422, "max_new_tokens", "[1, 512]"),
    ({"model": "gpt-pydoc", "max_new_tokens": 2.5}, 422, "max_new_tokens", "an integer"),
    ({"model": "gpt-pydoc", "temperature": "hot"}, 422, "temperature", "[0, 5]"),
    ({"model": "gpt-pydoc", "top_p": 0}, 422, "top_p", "(0, 1]"),
    ({"model": "gpt-pydoc", "num_samples": 17}, 422, "num_samples", "[1, 16]"),
    ({"model": "gpt-pydoc", "prompt": "x" * 300}, 422, "prompt", "at most 127 tokens"),
    ({"model": "gpt-pydoc", "prompt": "x" * 5000}, 422, "prompt", "4000 characters"),
    ({"model": "gpt-pydoc", "prompt": "naïve €"}, 422, "prompt", "vocabulary"),
    ({"model": "gpt-pydoc", "stream": True, "num_samples": 2}, 422, "num_samples", "1 with stream"),
    ({"model": "gpt-pydoc", "seed": -1}, 422, "seed", "[0, 4294967295]"),
    ({"model": "gpt-pydoc", "id": {"a": 1}}, 422, "id", "a string"),
    ({"model": "image-gpt-digits", "labels": [12]}, 422, "labels", "class id"),
    ({"model": "image-gpt-digits", "num_samples": 16}, 422, "num_samples", "<= 64"),  # 10 labels x 16
    ({"model": "image-gpt-digits", "stream": True}, 422, "stream", "false"),
    ({"model": "image-gpt-digits", "prompt": "hi"}, 422, "prompt", "labels"),
    ({"model": "text2image-digits", "caption": "a 3 " * 20}, 422, "caption", "at most 36 tokens"),
    ({"model": "music-transformer-bach", "max_new_tokens": 5000}, 422, "max_new_tokens", "[1, 2048]"),
    ({"model": "music-transformer-bach", "primer": "not base64!"}, 422, "primer", "MIDI"),
    ({"model": "music-transformer-bach", "primer": base64.b64encode(b"MThd junk").decode()}, 422, "primer", "MIDI"),
])
def test_bad_input_is_a_4xx_naming_the_field_and_range(client, body, status, field, accepted):
    r = client.post("/v1/generate", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["status"] == status
    assert accepted in json.dumps(error["accepted"]) + error["message"], error
    assert "Traceback" not in r.text


def test_malformed_bodies_and_unknown_routes_are_json_errors(client):
    r = client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    r = client.post("/v1/generate", json=[1, 2])
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    assert client.get("/v1/nothing").json()["error"]["status"] == 404
    assert client.get("/v1/generate").status_code == 405


def test_a_request_past_the_time_limit_is_cancelled_and_the_server_stays_up(models):
    with TestClient(create_app(models, ServeSettings(timeout_s=0.5))) as client:
        start = time.monotonic()
        r = post(client, model="music-transformer-bach", max_new_tokens=2048, audio=False)
        took = time.monotonic() - start
        assert r.status_code == 503, r.text
        assert r.json()["error"]["field"] == "timeout_s" and "0.5 s" in r.json()["error"]["message"]
        assert took < 5, f"cancelled after {took:.1f} s"
        ok = post(client, model="music-transformer-bach", max_new_tokens=4, audio=False)  # the worker is free
        assert ok.status_code == 200, ok.text
        assert client.get("/healthz").json()["status"] == "ok"
    # 512 gpt-pydoc tokens take about 0.4 s at batch 1 on a quiet machine: within 0.5 s, so a shorter limit here
    with TestClient(create_app(models, ServeSettings(timeout_s=0.05))) as client:
        with client.stream("POST", "/v1/generate", json={"model": "gpt-pydoc", "max_new_tokens": 512,
                                                         "stream": True}) as s:
            text = s.read().decode()  # a stream that runs out of time ends with an error event
        assert "event: error" in text and "timeout_s" in text
        assert client.get("/healthz").json()["status"] == "ok"


class Gate:
    """Holds a worker at the start of each generation until `release` is set, so that requests queue up behind
    the one it is running (deterministically, not by timing luck); records each call's batch (its prompts)."""

    def __init__(self, adapter) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches: list[list] = []
        real = adapter.run

        def run(batch, on_text=None):
            self.batches.append([o.get("prompt", o.get("labels")) for o in batch])
            self.entered.set()
            assert self.release.wait(60), "the test never released the gate"
            return real(batch, on_text=on_text)

        adapter.run = run  # an instance attribute: this app's adapter only


def wait_until(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.01)


@contextmanager
def gated_client(models, model: str = "gpt-pydoc", **settings):
    """(TestClient, Gate on `model`'s worker, that worker) for an app with `settings`; the gate opens on exit."""
    app = create_app(models, ServeSettings(**{"timeout_s": 60, **settings}))
    gate = Gate(app.state.server.adapters[model])
    try:
        with TestClient(app) as client:
            yield client, gate, app.state.server.workers[model]
    finally:
        gate.release.set()


def test_concurrent_text_requests_share_batches_and_each_gets_its_own_answer(models):
    """Greedy requests with equal options queue behind the first and run as one batch; every answer is
    the one its own prompt gets alone."""
    prompts = [f"The {w} statement" for w in ("with", "assert", "del", "pass", "raise", "return", "yield", "if")]
    with gated_client(models, max_batch=8) as (client, gate, worker), ThreadPoolExecutor(len(prompts)) as pool:
        body = {"model": "gpt-pydoc", "max_new_tokens": 6, "temperature": 0}
        futures = [pool.submit(post, client, id="r0", prompt=prompts[0], **body)]
        assert gate.entered.wait(30)
        futures += [pool.submit(post, client, id=f"r{i}", prompt=p, **body) for i, p in enumerate(prompts) if i]
        wait_until(lambda: worker.queued() == len(prompts) - 1, what="the other requests to queue")
        gate.release.set()
        answers = [f.result().json() for f in futures]
    # the first alone, the seven queued behind it (in whatever order their threads arrived) as one batch
    assert [sorted(b) for b in gate.batches] == [prompts[:1], sorted(prompts[1:])]
    assert (worker.requests, worker.batches) == (len(prompts), 2)
    m = zoo.load("gpt-pydoc")
    for i, (p, a) in enumerate(zip(prompts, answers)):
        assert a["id"] == f"r{i}" and a["result"]["prompt"] == p
        assert a["result"]["text"] == m.generate(p, max_new_tokens=6, temperature=0)


def test_concurrent_seeded_requests_each_get_what_they_get_alone(models):
    """Several threads send seeded requests at once (different seeds, prompts, options; a second model beside);
    each answer equals the answer to the same request sent alone. Seeded sampled requests run alone (one
    random generator serves a batch); seeded greedy ones with equal options share a batch."""
    sampled = [{"prompt": p, "seed": s, "temperature": 0.9, "top_k": 40, "max_new_tokens": 10}
               for p, s in [("The with", 1), ("The assert", 2), ("The with", 3), ("import", 2)]]
    greedy = [{"prompt": p, "seed": s, "temperature": 0, "max_new_tokens": 10}
              for p, s in [("def ", 5), ("The del", 6), ("class", 7)]]
    text = [{"model": "gpt-pydoc", **b} for b in sampled + greedy]
    image = {"model": "image-gpt-digits", "labels": [3], "num_samples": 1, "seed": 4}
    with gated_client(models, max_batch=8) as (client, gate, worker), ThreadPoolExecutor(len(text) + 1) as pool:
        first = pool.submit(client.post, "/v1/generate", json=text[0])
        assert gate.entered.wait(30)
        rest = [pool.submit(client.post, "/v1/generate", json=b) for b in [*text[1:], image]]
        wait_until(lambda: worker.queued() == len(text) - 1, what="the text requests to queue")
        gate.release.set()
        together = [f.result() for f in [first, *rest]]
        assert [r.status_code for r in together] == [200] * len(together), [r.text for r in together]
        # sampled: each alone; the three greedy ones in one batch (threads queue them in any order)
        expected = [[b["prompt"]] for b in sampled] + [[b["prompt"] for b in greedy]]
        assert sorted(map(sorted, gate.batches)) == sorted(map(sorted, expected))
        alone = [client.post("/v1/generate", json=b) for b in [*text, image]]
    for body, a, b in zip([*text, image], together, alone):
        assert a.json()["result"] == b.json()["result"], body
        assert a.json()["seed"] == body["seed"]
    texts = [r.json()["result"]["text"] for r in together[:len(sampled)]]
    assert texts[0] != texts[2]  # the same prompt, another seed: another sample (the seed is honoured)


def test_a_full_queue_is_a_503_naming_max_queue_and_the_queued_requests_still_run(models):
    """max_queue=2: one request running (held by the gate) and two waiting fill the queue; the next one, plain
    or streamed, is refused at once with a JSON 503; once the worker is free, the queued ones are served."""
    gated = gated_client(models, timeout_s=15, max_batch=1, max_queue=2)  # a broken refusal fails in 15 s, not 60
    with gated as (client, gate, worker), ThreadPoolExecutor(3) as pool:
        bodies = [{"model": "gpt-pydoc", "prompt": p, "max_new_tokens": 4, "temperature": 0}
                  for p in ("The with", "The del", "The pass")]
        running = [pool.submit(client.post, "/v1/generate", json=bodies[0])]
        assert gate.entered.wait(30)
        running += [pool.submit(client.post, "/v1/generate", json=b) for b in bodies[1:]]
        wait_until(lambda: worker.queued() == 2, what="two requests to queue")
        for extra in ({}, {"stream": True}):
            r = post(client, model="gpt-pydoc", prompt="The if", max_new_tokens=4, **extra)
            assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
            error = r.json()["error"]
            assert error["status"] == 503 and "max_queue" in error["message"] and "2 requests are queued" in \
                error["message"], error
        assert client.get("/healthz").json()["queued"]["gpt-pydoc"] == 2
        assert not any(f.done() for f in running)  # the refusals did not disturb the accepted requests
        gate.release.set()
        answers = [f.result() for f in running]
        assert [r.json()["result"]["prompt"] for r in answers] == [b["prompt"] for b in bodies]
        assert post(client, model="gpt-pydoc", prompt="The if", max_new_tokens=4).status_code == 200  # room again
    assert (worker.requests, worker.batches) == (4, 4)


def test_a_failing_generation_is_a_json_500_and_the_server_answers_the_next_request(models, caplog):
    """The model raising mid-generation: the client gets a 500 naming no internals (the traceback goes to the
    log); the worker survives and the next request, plain or streamed, gets the right answer."""
    app = create_app(models, ServeSettings(timeout_s=20))
    adapter = app.state.server.adapters["gpt-pydoc"]
    real, failures = adapter.run, []

    def run(batch, on_text=None):
        if len(failures) < 2:  # the first plain and the first streamed request fail
            failures.append(batch)
            raise RuntimeError("secret internals at /srv/model.py")
        return real(batch, on_text=on_text)

    adapter.run = run
    expected = zoo.load("gpt-pydoc").generate("The with", max_new_tokens=8, seed=1)
    with TestClient(app) as client:
        r = post(client, model="gpt-pydoc", prompt="The with", max_new_tokens=8, seed=1)
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
        error = r.json()["error"]
        assert error["status"] == 500 and "generation failed (RuntimeError)" in error["message"], error
        assert "Traceback" not in r.text and "secret" not in r.text
        with client.stream("POST", "/v1/generate", json={"model": "gpt-pydoc", "prompt": "x", "stream": True}) as s:
            events = s.read().decode()
        assert "event: error" in events and '"status": 500' in events and "event: done" not in events, events
        assert "Traceback" not in events and "secret" not in events
        assert len(failures) == 2
        r = post(client, model="gpt-pydoc", prompt="The with", max_new_tokens=8, seed=1)
        assert r.status_code == 200 and r.json()["result"]["text"] == expected, r.text
        with client.stream("POST", "/v1/generate", json={"model": "gpt-pydoc", "prompt": "The with",
                                                         "max_new_tokens": 8, "seed": 1, "stream": True}) as s:
            events = s.read().decode()
        assert "event: done" in events and json.dumps(expected) in events, events
    assert "secret internals" in caplog.text and "Traceback" in caplog.text  # ... the log has the details


def held_after_first_text(app, name: str) -> tuple[list, list[str], list[str], threading.Event]:
    """Instrument served model `name`: (jobs submitted, texts streamed, how each generation ended: "finished" or
    the exception's name, an Event). A streamed generation holds after its first text until the Event is set,
    so a test can hang up mid-stream with no race against the model's speed."""
    adapter, worker = app.state.server.adapters[name], app.state.server.workers[name]
    real_run, real_submit = adapter.run, worker.submit
    jobs, tokens, ended, hung_up = [], [], [], threading.Event()

    def submit(job):
        jobs.append(job)
        return real_submit(job)

    def run(batch, on_text=None):
        def counted(text: str) -> None:
            tokens.append(text)
            on_text(text)
            if len(tokens) == 1:
                assert hung_up.wait(30)

        try:
            out = real_run(batch, on_text=counted if on_text else None)
        except Exception as e:
            ended.append(type(e).__name__)
            raise
        ended.append("finished")
        return out

    worker.submit, adapter.run = submit, run
    return jobs, tokens, ended, hung_up


@contextmanager
def live_app(app):
    """`app` behind a real uvicorn on a loopback port, in a thread (a real socket: a client can hang up)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_stream_the_client_abandons_is_cancelled_and_the_worker_moves_on(models):
    """A client reads the first token of a long stream and hangs up: the server marks the job abandoned, the
    worker's next decoding step cancels the generation (no more tokens), and the next request is served."""
    app = create_app(models, ServeSettings(timeout_s=60))
    worker = app.state.server.workers["gpt-pydoc"]
    jobs, tokens, ended, hung_up = held_after_first_text(app, "gpt-pydoc")
    with live_app(app) as url:
        body = {"model": "gpt-pydoc", "prompt": "The with", "max_new_tokens": 512, "seed": 0, "stream": True}
        with httpx.Client(base_url=url, timeout=30) as c, c.stream("POST", "/v1/generate", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            while not next(lines).startswith("event: token"):
                pass
        # the client has closed the connection
        wait_until(lambda: jobs[0].abandoned.is_set(), timeout=10, what="the server to notice the hang-up")
        hung_up.set()
        wait_until(lambda: ended, timeout=30, what="the generation to end")
        assert ended == ["Cancelled"] and len(tokens) == 1, (ended, len(tokens))  # stopped at the next step
        assert getattr(jobs[0].future.exception(), "status", None) == 503  # the job ends as cancelled
        start = time.monotonic()
        r = httpx.post(f"{url}/v1/generate", json={"model": "gpt-pydoc", "prompt": "The with", "max_new_tokens": 8,
                                                   "seed": 1}, timeout=30)
        assert r.status_code == 200 and r.json()["result"]["text"] == zoo.load("gpt-pydoc").generate(
            "The with", max_new_tokens=8, seed=1)
        assert time.monotonic() - start < 10
        assert worker.requests == 2


# ---- the page, OpenAPI and /docs work offline -----------------------------------------------------
def test_page_enlarges_pixel_art_by_a_whole_factor_with_nearest_neighbour(client):
    css, js = client.get("/static/style.css").text, client.get("/static/app.js").text
    rule = re.search(r"#media-out img\.pixel-art \{([^}]*)\}", css)
    assert rule and "image-rendering: pixelated" in rule[1]
    assert re.search(r"MIN_CELL_PX = (\d+)", js)[1] == "128" and '"pixel-art"' in js
    # the page reads GET /v1/models in its OpenAI list shape (tests/test_serve_browser.py drives it for real)
    assert ".data;" in js and client.get("/v1/models").json()["data"][0]["member"] == "text"


def test_page_openapi_and_docs_use_no_internet_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and "<select id=\"model\"" in page.text
    for path in ["/static/app.js", "/static/style.css"]:
        assert client.get(path).status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    for text in (page.text, docs.text):
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text)
        assert refs and not [u for u in refs if re.match(r"(https?:)?//", u)], refs
    assert not re.search(r"https?://", client.get("/static/app.js").text + client.get("/static/style.css").text)
    assert client.get("/redoc").status_code == 404  # ReDoc would fetch Google fonts
    for ref in re.findall(r"""(?:src|href)\s*=\s*["'](/static-offline-docs/[^"']+)""", docs.text):
        assert client.get(ref).status_code == 200, ref
    spec = client.get("/openapi.json").json()
    gen = spec["paths"]["/v1/generate"]["post"]
    props = gen["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"model", "prompt", "labels", "caption", "primer", "temperature", "guidance", "stream"} <= set(props)
    assert "/v1/models" in spec["paths"]


# ---- docs/serving.md's curl examples against a live zoo-serve ------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server():
    """`python -m zoo.serve` (what the zoo-serve script runs) on a free loopback port; stopped afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "zoo.serve", f"port={port}", f"models=[{','.join(NAMES)}]", "threads=1",
           "log_level=warning"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a busy 2-core machine: imports and loading can take a while
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"zoo-serve exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("zoo-serve did not answer /healthz within 180 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def curl_examples() -> list[tuple[str, bool]]:
    """(command, is an error example) for each `curl` line in docs/serving.md's ```bash blocks; a block whose
    first line is `# error example` shows a refusal."""
    text = (ROOT / "docs" / "serving.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        error = block.startswith("# error example")
        joined = block.replace("\\\n", " ")
        found += [(line.strip(), error) for line in joined.splitlines() if line.strip().startswith("curl ")]
    return found


def test_the_docs_have_curl_examples_for_every_endpoint():
    commands = " ".join(c for c, _ in curl_examples())
    for needle in ["/v1/models", "/v1/generate", "/openapi.json", '"stream": true', "image-gpt-digits",
                   "music-transformer-bach", "text2image-digits"]:
        assert needle in commands, needle


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize(("command", "error"), curl_examples(), ids=lambda v: v if isinstance(v, bool) else v[:60])
def test_curl_example_from_the_docs_runs(live_server, command, error, tmp_path):
    cmd = command.replace("http://localhost:8000", live_server)
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, f"{cmd}\n{r.stderr}"
    out = r.stdout
    assert out.strip(), cmd
    if error:
        assert '"error"' in out and '"field"' in out, out[:500]
    else:
        assert '"error"' not in out, out[:500]
        if "| python" in cmd:  # saves files and prints their names
            assert all((tmp_path / f).stat().st_size > 0 for f in re.findall(r"'([\w.]+\.(?:png|mid|wav))'", cmd))
        elif '"stream": true' in cmd:
            assert out.startswith("event: start") and "event: done" in out, out[:500]
        else:
            json.loads(out)
