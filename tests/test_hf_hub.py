"""The Hugging Face Hub: loading from its cache (offline, laid out as huggingface_hub lays it out), pinned
Hub registry entries, and `zoo-export ... push_to=` up to the upload call (there is no network here)."""

from __future__ import annotations

import hashlib
import os
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
