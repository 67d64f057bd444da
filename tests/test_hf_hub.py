"""The Hugging Face Hub: loading from its cache (offline, laid out as huggingface_hub lays it out), pinned
Hub registry entries, and `zoo-export ... push_to=` up to the upload call (there is no network here)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from helpers import ROOT, compose_train
from huggingface_hub import ModelCard, constants
from test_hub import _tiny_gpt2, tiny_ckpt  # noqa: F401  (tiny_ckpt: a module-scoped fixture)

import zoo
from zoo import hub
from zoo.data.download import ChecksumError, file_sha256
from zoo.hub.export import export
from zoo.hub.hf_hub import push

COMMIT = "a" * 40  # a commit hash as the Hub writes them (40 hex digits)
LFS_SUFFIXES = (".safetensors", ".bin")  # stored in git LFS on the Hub: the blob name is the file's sha256


def put_in_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """Lay `folder`'s files out as huggingface_hub.hf_hub_download does: blobs/<etag> (sha256 for LFS files,
    the git blob sha1 otherwise), snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/<ref> = commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        etag = (hashlib.sha256(data).hexdigest() if f.suffix in LFS_SUFFIXES
                else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
        (repo / "blobs" / etag).write_bytes(data)
        (snapshot / f.name).symlink_to(os.path.relpath(repo / "blobs" / etag, snapshot))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline: what HF_HUB_CACHE=... HF_HUB_OFFLINE=1 give a fresh process
    (huggingface_hub reads both when imported, so the test sets what it read)."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return _tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


def _ids(m: hub.Pretrained) -> torch.Tensor:
    return torch.tensor([m.codec.encode("The with statement: naïve café")[:32]])


# ---- zoo.load from the Hub cache ----------------------------------------------------------------
def test_hub_repo_loads_offline_from_the_cache_with_transformers_logits(hf_cache, gpt2_dir):
    from transformers import GPT2LMHeadModel

    snapshot = put_in_hf_cache(hf_cache, "tiny-org/tiny-gpt2", gpt2_dir)
    m = zoo.load("hf:tiny-org/tiny-gpt2")
    assert m.name == "hf:tiny-org/tiny-gpt2" and m.codec is not None
    ref = GPT2LMHeadModel.from_pretrained(snapshot).eval()  # what transformers reads from the same cache
    x = _ids(m)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x).logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(zoo.load("hf:tiny-org/tiny-gpt2", revision=COMMIT)(x), m(x))  # a commit, as pinned


def test_gpt2_names_come_from_openai_community_in_the_cache(hf_cache, gpt2_dir):
    put_in_hf_cache(hf_cache, "openai-community/gpt2-medium", gpt2_dir)
    m = zoo.load("gpt2-medium")
    assert m.name == "gpt2-medium" and torch.equal(m(_ids(m)), zoo.load("gpt2", path=gpt2_dir)(_ids(m)))
    with pytest.raises(hub.HubError, match=r"'gpt2-huge' is not a GPT-2 size.*'gpt2-xl'"):
        zoo.load("gpt2-huge")


def test_torch_hub_gpt2_entry_point_reads_the_cache(hf_cache, gpt2_dir):
    put_in_hf_cache(hf_cache, "openai-community/gpt2-large", gpt2_dir)
    m = torch.hub.load(str(ROOT), "gpt2", source="local", trust_repo=True, size="gpt2-large")
    assert m.name == "gpt2-large" and torch.equal(m(_ids(m)), zoo.load(gpt2_dir)(_ids(m)))


def test_offline_miss_says_what_is_missing_where_and_how_to_fetch_it(hf_cache):
    with pytest.raises(hub.HubError) as e:
        zoo.load("gpt2")
    msg = str(e.value)
    for needed in ("openai-community/gpt2", "not in the cache", str(hf_cache), "HF_HUB_OFFLINE", "hf download"):
        assert needed in msg, (needed, msg)


def test_a_revision_missing_from_the_cache_is_a_clear_error(hf_cache, gpt2_dir):
    put_in_hf_cache(hf_cache, "tiny-org/tiny-gpt2", gpt2_dir)
    missing = "b" * 40
    with pytest.raises(hub.HubError, match=rf"tiny-org/tiny-gpt2 at revision '{missing}' is not in the cache.*"
                                           rf"holds revisions \{{'main': '{COMMIT}'\}}"):
        zoo.load("hf:tiny-org/tiny-gpt2", revision=missing)
    with pytest.raises(hub.HubError, match="revision='v1' applies to Hugging Face Hub sources"):
        zoo.load("gpt-pydoc", revision="v1")


def test_hf_hub_cache_and_offline_env_are_honoured_by_a_fresh_process(tmp_path, gpt2_dir):
    """As a user runs it: HF_HUB_CACHE and HF_HUB_OFFLINE=1 set before Python starts, no network."""
    cache = tmp_path / "elsewhere"
    put_in_hf_cache(cache, "openai-community/gpt2", gpt2_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "HTTPS_PROXY": "http://0.0.0.0:9", "HTTP_PROXY": "http://0.0.0.0:9", "no_proxy": ""}
    code = "import zoo; m = zoo.load('gpt2'); print(m.generate('The with', max_new_tokens=4, seed=0))"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=180)
    assert r.returncode == 0 and r.stdout.startswith("The with"), r.stderr


# ---- registry entries that point at a Hub repo ----------------------------------------------------
def _hub_entry(name: str, files: dict[str, str]) -> hub.Entry:
    return hub.Entry(name=name, model_type="gpt", location="hf:tiny-org/pinned", revision=COMMIT, files=files)


def test_hub_registry_entry_is_fetched_at_its_revision_and_verified(hf_cache, gpt2_dir, monkeypatch):
    put_in_hf_cache(hf_cache, "tiny-org/pinned", gpt2_dir, ref=None)  # only the pinned commit is cached
    files = {f: file_sha256(gpt2_dir / f) for f in ("config.json", "model.safetensors", "vocab.json", "merges.txt")}
    monkeypatch.setitem(hub.REGISTRY, "pinned", _hub_entry("pinned", files))
    m = zoo.load("pinned")
    assert m.name == "pinned" and torch.equal(m(_ids(m)), zoo.load(gpt2_dir)(_ids(m)))


def test_hub_registry_entry_with_a_wrong_checksum_is_refused(hf_cache, gpt2_dir, monkeypatch):
    put_in_hf_cache(hf_cache, "tiny-org/pinned", gpt2_dir)
    files = {"config.json": file_sha256(gpt2_dir / "config.json"), "model.safetensors": "0" * 64}
    monkeypatch.setitem(hub.REGISTRY, "pinned", _hub_entry("pinned", files))
    loaded = []
    monkeypatch.setattr("zoo.hub.loading._load_folder", lambda *a: loaded.append(a))
    with pytest.raises(ChecksumError, match=r"model.safetensors of the Hub repo tiny-org/pinned \(revision a{40}\) "
                                            r"has sha256 [0-9a-f]{64}, expected 0{64}; nothing was loaded"):
        zoo.load("pinned")
    assert loaded == []


# ---- export with a Hub model card, push --------------------------------------------------------------
class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls; upload_folder 'uploads' into `hub` (a cache)."""

    calls: list[tuple[str, dict]] = []
    hub: Path | None = None

    def create_repo(self, repo_id: str, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, *, repo_id: str, folder_path: str, **kw):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": folder_path, "files": files, **kw}))
        if self.hub is not None:
            put_in_hf_cache(self.hub, repo_id, Path(folder_path), commit="c" * 40)
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'c' * 40}",
                                          commit_message=kw.get("commit_message", ""), commit_description="",
                                          oid="c" * 40)


@pytest.fixture
def recorder(monkeypatch) -> type[RecordingHfApi]:
    RecordingHfApi.calls, RecordingHfApi.hub = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    return RecordingHfApi


def test_export_card_front_matter_is_parsed_by_huggingface_hub(tmp_path, gpt2_dir):
    m = zoo.load("gpt2", path=gpt2_dir)
    card = {"data": "pydoc", "data_license": "PSF-2.0", "license": "mit", "train_command": "zoo-train x=1",
            "metric": "val loss (nats/token)", "metric_value": 1.2345, "hub_repo": "me/tiny"}
    out = export(m, tmp_path / "tiny", dtype="float32", card=card)
    parsed = ModelCard.load(out / "README.md")
    d = parsed.data
    assert (d.license, d.library_name, d.datasets, d.pipeline_tag) == ("mit", "zoo", ["pydoc"], "text-generation")
    assert {"zoo", "gpt", "text"} <= set(d.tags)
    (result,) = d.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("loss", 1.2345, "pydoc")
    for text in ("zoo.load('hf:me/tiny')", "| train command | zoo-train x=1 |", "| data license | PSF-2.0 |"):
        assert text in parsed.text
    no_metric = ModelCard.load(export(m, tmp_path / "plain", dtype="float32") / "README.md").data
    assert no_metric.license == "other" and no_metric.eval_results is None


def test_push_uploads_the_folder_and_the_pushed_model_loads_from_the_hub(tmp_path, gpt2_dir, hf_cache, recorder):
    m = zoo.load("gpt2", path=gpt2_dir)
    out = export(m, tmp_path / "tiny", dtype="float32", card={"hub_repo": "me/tiny"})
    recorder.hub = hf_cache
    url = push(out, "me/tiny", private=True, commit_message="zoo-export tiny")
    assert url == f"https://huggingface.co/me/tiny/commit/{'c' * 40}"
    (create, kw_create), (upload, kw_upload) = recorder.calls
    assert (create, kw_create) == ("create_repo", {"repo_id": "me/tiny", "token": True, "private": True,
                                                    "exist_ok": True})
    assert upload == "upload_folder" and kw_upload["folder_path"] == str(out)
    assert kw_upload["files"] == ["README.md", "codec.json", "config.json", "generation_config.json",
                                  "model.safetensors", "tokenizer.json"]
    assert kw_upload["commit_message"] == "zoo-export tiny" and kw_upload["token"] is True
    pulled = zoo.load("hf:me/tiny")  # a zoo export on the Hub loads like a GPT-2 repo
    assert pulled.name == "hf:me/tiny" and torch.equal(pulled(_ids(m)), m(_ids(m)))


def test_push_without_a_token_is_the_librarys_error_in_one_line(tmp_path, gpt2_dir, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    out = export(zoo.load("gpt2", path=gpt2_dir), tmp_path / "tiny", dtype="float32")
    with pytest.raises(hub.HubError) as e:
        push(out, "me/tiny")
    assert str(e.value).startswith("cannot push to me/tiny: Token is required") and "\n" not in str(e.value)
    with pytest.raises(hub.HubError, match="push_to='me' is not a Hub repo id; expected ORG/NAME"):
        push(out, "me")


def test_zoo_export_push_to_exports_measures_and_uploads(tiny_ckpt, tmp_path, recorder):  # noqa: F811
    from zoo.cli import resolve
    from zoo.export import export_and_push

    cfg = compose_train([f"checkpoint={tiny_ckpt}", f"out={tmp_path / 'tiny'}", "push_to=me/tiny",
                         "+card.train_command='zoo-train experiment=gpt_pydoc'", "+card.license=mit"], "export")
    path, url = export_and_push(resolve(cfg, "zoo-export"))
    assert url.startswith("https://huggingface.co/me/tiny/commit/")
    (_, create), (_, upload) = recorder.calls
    assert create["repo_id"] == upload["repo_id"] == "me/tiny" and create["private"] is False
    assert upload["folder_path"] == str(path) and "model.safetensors" in upload["files"]
    data = ModelCard.load(path / "README.md").data
    metric = data.eval_results[0].metric_value
    assert upload["commit_message"] == f"zoo-export tiny (val loss {metric} nats/token)"
    assert data.license == "mit" and data.datasets == ["pydoc"] and data.library_name == "zoo"
    assert "zoo.load('hf:me/tiny')" in (path / "README.md").read_text()


def test_docs_hub_md_export_command_composes():
    """docs/hub.md's zoo-export push command is a valid zoo-export command line (not run: it uploads)."""
    import shlex

    text = (ROOT / "docs" / "hub.md").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("zoo-export ")]
    cfg = compose_train(shlex.split(line)[1:], "export")
    assert cfg.push_to == "ORG/my-gpt" and cfg.card.license == "mit" and cfg.card.train_command.startswith("zoo-train")


def test_docs_hub_md_music_shipping_export_composes():
    """docs/hub.md's "Shipping a music checkpoint" zoo-export line composes, with card_file= (step 4) too."""
    import shlex

    text = (ROOT / "docs" / "hub.md").read_text().replace("\\\n", " ")
    (line,) = [ln.strip() for ln in text.splitlines() if ln.startswith("   zoo-export ")]
    cfg = compose_train([*shlex.split(line)[1:], "card_file=/tmp/NAME_stats.json"], "export")
    assert cfg.out == "zoo/hub/NAME" and cfg.card_file == "/tmp/NAME_stats.json"
    assert cfg.card.train_command.startswith("zoo-train") and cfg.card.sample.endswith("(pianoroll.png)")


# ---- what the Hub answers: its error branches, through huggingface_hub's own client -------------------
class FakeHub:
    """The Hub's HTTP API as huggingface_hub calls it (repo info, tree listing, file resolve), answered in
    process by an httpx transport: the library's own code turns each answer into its exception classes.
    `repos`: repo id -> {file name: bytes}; `gated`: repos whose files need accepted conditions (the Hub's
    403 GatedRepo); `status`: repo id -> an HTTP status its info request gets (403 forbidden, 503 down)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.gated: set[str] = set()
        self.status: dict[str, int] = {}
        self.requests: list[str] = []

    def add(self, repo_id: str, folder: Path, skip: tuple[str, ...] = ()) -> None:
        self.repos[repo_id] = {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.name not in skip}

    def __call__(self, request):
        import httpx2

        self.requests.append(f"{request.method} {request.url.path}")
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", request.url.path):
            repo, revision = m[1], m[2]
            if repo in self.status:
                return httpx2.Response(self.status[repo], headers={"X-Error-Message": "Forbidden"})
            if repo not in self.repos:
                return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"})
            if revision not in ("main", COMMIT):
                return httpx2.Response(404, headers={"X-Error-Code": "RevisionNotFound"})
            return httpx2.Response(200, json={"id": repo, "sha": COMMIT,
                                              "siblings": [{"rfilename": f} for f in self.repos[repo]]})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/.*", request.url.path):
            return httpx2.Response(200, json=[{"type": "file", "path": f, "size": len(d), "oid": _git_sha(d)}
                                              for f, d in self.repos[m[1]].items()])
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", request.url.path):
            repo, fname = m[1], m[2]
            if repo in self.gated:
                return httpx2.Response(403, headers={"X-Error-Code": "GatedRepo", "X-Error-Message":
                                                     f"Access to model {repo} is restricted."})
            if fname not in self.repos[repo]:
                return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"})
            data = self.repos[repo][fname]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_git_sha(data)}"', "Content-Length": str(len(data))}
            return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)
        return httpx2.Response(404)


def _git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    """Online, an empty cache, no token; every request huggingface_hub makes is answered by a FakeHub."""
    import httpx2

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    hub_ = FakeHub()
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub_),
                                                              follow_redirects=True))
    yield hub_
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


def _hub_error(source: str, **kw) -> str:
    with pytest.raises(hub.HubError) as e:
        zoo.load(source, **kw)
    message = str(e.value)
    assert "\n" not in message, message  # one line: zoo-sample prints it as it is
    return message


def test_a_hub_repo_downloads_once_then_loads_from_the_cache(fake_hub, gpt2_dir):
    fake_hub.add("tiny-org/tiny-gpt2", gpt2_dir)
    m = zoo.load("hf:tiny-org/tiny-gpt2")
    assert torch.equal(m(_ids(m)), zoo.load(gpt2_dir)(_ids(m)))
    assert f"GET /tiny-org/tiny-gpt2/resolve/{COMMIT}/model.safetensors" in fake_hub.requests
    fake_hub.requests.clear()
    zoo.load("hf:tiny-org/tiny-gpt2")
    assert fake_hub.requests and not [r for r in fake_hub.requests if r.startswith("GET") and "/resolve/" in r]


@pytest.mark.parametrize(("case", "source", "revision", "expected"), [
    ("missing repo", "hf:nobody/missing", None,
     r"^hf:nobody/missing: the Hub repo 'nobody/missing' does not exist or needs a token with access to it "
     r"\(HF_TOKEN or `hf auth login`\)"),
    ("missing revision", "hf:tiny-org/tiny-gpt2", "v9",
     r"^hf:tiny-org/tiny-gpt2: the Hub repo tiny-org/tiny-gpt2 has no revision 'v9' \(a branch, tag or commit "
     r"hash\); see https://huggingface.co/tiny-org/tiny-gpt2/commits/main$"),
    ("gated", "hf:tiny-org/gated", None,
     r"^hf:tiny-org/gated: the Hub repo tiny-org/gated is gated: accept its conditions at "
     r"https://huggingface.co/tiny-org/gated, then use a token of that account \(HF_TOKEN or `hf auth login`\)"),
    ("forbidden", "hf:tiny-org/private", None,
     r"^hf:tiny-org/private: the Hub refused tiny-org/private \(HTTP 403\).*a token with access to it "
     r"\(HF_TOKEN or `hf auth login`\)"),
    ("hub down", "hf:tiny-org/down", None,
     r"^hf:tiny-org/down: the Hub answered HTTP 503 for tiny-org/down and the Hugging Face cache .* does not hold "
     r"it; load again later"),
    ("no weights", "hf:tiny-org/no-weights", None,
     r"^hf:tiny-org/no-weights: the Hub repo tiny-org/no-weights \(revision main\) has no weights: expected "
     r"model.safetensors or pytorch_model.bin$"),
    ("gpt2 name", "gpt2", "v9", r"^gpt2: the Hub repo openai-community/gpt2 has no revision 'v9'"),
])
def test_hub_errors_name_the_repo_and_what_to_do_in_one_line(case, source, revision, expected, fake_hub, gpt2_dir):
    for repo in ("tiny-org/tiny-gpt2", "tiny-org/gated", "tiny-org/private", "tiny-org/down",
                 "openai-community/gpt2"):
        fake_hub.add(repo, gpt2_dir)
    fake_hub.add("tiny-org/no-weights", gpt2_dir, skip=("model.safetensors",))
    fake_hub.gated.add("tiny-org/gated")
    fake_hub.status |= {"tiny-org/private": 403, "tiny-org/down": 503}
    message = _hub_error(source, revision=revision)
    assert re.search(expected, message), (case, message)
    assert "Traceback" not in message and "Request ID" not in message


def test_a_pickle_only_hub_repo_is_read_with_the_safe_loader(fake_hub, gpt2_dir, tmp_path):
    """An older repo with only pytorch_model.bin: fetched besides the other files, read with weights_only=True."""
    from safetensors.torch import load_file

    fake_hub.add("tiny-org/pickled", gpt2_dir, skip=("model.safetensors",))
    bin_file = tmp_path / "pytorch_model.bin"
    torch.save(load_file(gpt2_dir / "model.safetensors"), bin_file)
    fake_hub.repos["tiny-org/pickled"]["pytorch_model.bin"] = bin_file.read_bytes()
    m = zoo.load("hf:tiny-org/pickled")
    assert torch.equal(m(_ids(m)), zoo.load(gpt2_dir)(_ids(m)))
    assert f"GET /tiny-org/pickled/resolve/{COMMIT}/pytorch_model.bin" in fake_hub.requests


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_hub_pickle_that_would_run_code_is_refused_naming_the_repo(fake_hub, gpt2_dir, tmp_path):
    fake_hub.add("evil-org/pickled", gpt2_dir, skip=("model.safetensors",))
    marker = tmp_path / "ran"
    bin_file = tmp_path / "pytorch_model.bin"
    torch.save({"transformer.wte.weight": torch.zeros(2, 2), "payload": _RunsCode(marker)}, bin_file)
    fake_hub.repos["evil-org/pickled"]["pytorch_model.bin"] = bin_file.read_bytes()
    message = _hub_error("hf:evil-org/pickled")
    assert message.startswith("hf:evil-org/pickled: refused to load ") and "could run code" in message, message
    assert "GLOBAL " in message and not marker.exists()


def test_zoo_sample_reports_a_missing_hub_repo_in_one_line(tmp_path):
    """The console as a user sees it: an online zoo-sample against a Hub (a local server here) that has no such
    repo prints one line naming it, no traceback."""
    import http.server
    import threading

    from helpers import run_cli

    class NotFound(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_CACHE": str(tmp_path / "cache"),
               "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        r = run_cli(["zoo-sample", "checkpoint=hf:nobody/missing", "max_new_tokens=4"], cwd=tmp_path, env=env)
    finally:
        server.shutdown()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()  # one line: no HTTP request log (zoo.cli.quiet_console), no traceback
    assert line.startswith("zoo-sample: hf:nobody/missing: the Hub repo 'nobody/missing' does not exist or needs "
                           "a token with access to it (HF_TOKEN or `hf auth login`)"), line


def test_gpt2_cached_by_transformers_under_its_legacy_id_is_used_offline(hf_cache, gpt2_dir, monkeypatch):
    """transformers' from_pretrained("gpt2") caches models--gpt2: zoo.load("gpt2") reads it, never asking the
    Hub for openai-community/gpt2 (offline here; online the same choice is made before any download)."""
    put_in_hf_cache(hf_cache, "gpt2", gpt2_dir)
    asked: list[str] = []
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: asked.append(repo_id) or real(repo_id, **kw))
    m = zoo.load("gpt2")
    assert m.name == "gpt2" and torch.equal(m(_ids(m)), zoo.load("gpt2", path=gpt2_dir)(_ids(m)))
    assert asked[-1] == "gpt2"
    # both cached: openai-community's copy, as before
    put_in_hf_cache(hf_cache, "openai-community/gpt2", gpt2_dir, commit="b" * 40)
    asked.clear()
    zoo.load("gpt2")
    assert asked[-1] == "openai-community/gpt2"
    # a legacy copy without weights is not a copy: the error still names openai-community/gpt2
    hub_dir = hf_cache / "models--gpt2-medium" / "snapshots" / COMMIT
    hub_dir.mkdir(parents=True)
    (hub_dir / "config.json").write_text("{}")
    (hf_cache / "models--gpt2-medium" / "refs").mkdir()
    (hf_cache / "models--gpt2-medium" / "refs" / "main").write_text(COMMIT)
    with pytest.raises(hub.HubError, match="openai-community/gpt2-medium is not in the cache"):
        zoo.load("gpt2-medium")
