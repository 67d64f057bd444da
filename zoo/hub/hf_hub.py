"""The Hugging Face Hub: fetch a repo's model files into the standard cache, push an export folder.

Downloads go through `huggingface_hub.snapshot_download`, so its cache (`HF_HUB_CACHE`, default
~/.cache/huggingface/hub), its offline switch (`HF_HUB_OFFLINE=1`) and its token (`HF_TOKEN` or
`hf auth login`) behave as they do for transformers: a repo is fetched once, then read from the cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from zoo.hub.registry import HF_PREFIX, HubError

log = logging.getLogger(__name__)

# What a model needs, for a Hugging Face GPT-2 repo and for a zoo export pushed by `push`: a GPT-2 repo's
# other weights (TF, Flax, ONNX, rust) are never fetched; pytorch_model.bin only when there is no safetensors.
MODEL_FILES = ["config.json", "model.safetensors", "generation_config.json", "vocab.json", "merges.txt",
               "codec.json", "tokenizer.json", "preprocessor_config.json"]  # the last: an ImageGPT's colour clusters
PICKLED_WEIGHTS = "pytorch_model.bin"
TOKEN_HELP = "(HF_TOKEN or `hf auth login`)"


def fetch(repo_id: str, revision: str | None = None, files: list[str] | None = None, *,
          name: str | None = None) -> Path:
    """The local snapshot folder of `repo_id` at `revision` (None = main) holding `files` (default
    MODEL_FILES; the ones a repo lacks are skipped), downloaded into the Hugging Face cache if missing.

    Raises HubError for a repo or revision the Hub (or, offline, the cache) does not have, naming the
    cache and how to fetch it.
    """
    label = name or f"{HF_PREFIX}{repo_id}"
    try:
        folder = Path(huggingface_hub.snapshot_download(repo_id, revision=revision,
                                                        allow_patterns=files or MODEL_FILES))
        if files is None and not (folder / "model.safetensors").is_file() and not (folder / PICKLED_WEIGHTS).is_file():
            # an older repo with only a pickle: read later with weights_only=True (zoo.hub.gpt2)
            huggingface_hub.hf_hub_download(repo_id, PICKLED_WEIGHTS, revision=folder.name)
    except RevisionNotFoundError as e:
        raise HubError(f"{label}: the Hub repo {repo_id} has no revision {revision!r} (a branch, tag or "
                       f"commit hash); see https://huggingface.co/{repo_id}/commits/main") from e
    except GatedRepoError as e:  # the repo exists; its files need the conditions accepted (a subclass of the next)
        raise HubError(f"{label}: the Hub repo {repo_id} is gated: accept its conditions at "
                       f"https://huggingface.co/{repo_id}, then use a token of that account {TOKEN_HELP}") from e
    except RepositoryNotFoundError as e:  # the Hub says so for private repos without a token too
        raise HubError(f"{label}: the Hub repo {repo_id!r} does not exist or needs a token with access to it "
                       f"{TOKEN_HELP}: {_first_line(e)}") from e
    except RemoteEntryNotFoundError as e:
        raise HubError(f"{label}: the Hub repo {repo_id} (revision {revision or 'main'}) has no weights: "
                       "expected model.safetensors or pytorch_model.bin") from e
    except IncompleteSnapshotError as e:
        raise HubError(f"{label}: {_first_line(e)}") from e
    except LocalEntryNotFoundError as e:  # offline, the Hub unreachable or refusing, and not in the cache
        refusal = _http_refusal(label, repo_id, e.__cause__)
        raise HubError(refusal or _not_cached(label, repo_id, revision)) from e
    except HFValidationError as e:
        raise HubError(f"{label}: {repo_id!r} is not a Hub repo id ({_first_line(e)}); expected ORG/NAME") from e
    except HfHubHTTPError as e:
        message = _http_refusal(label, repo_id, e) or f"{label}: the Hub refused {repo_id}: {_first_line(e)}"
        raise HubError(message) from e
    if not (folder / "config.json").is_file():
        raise HubError(f"{label}: {folder} has no config.json; the Hub repo {repo_id} is not a GPT-2 or zoo model")
    return folder


def cache_dir() -> Path:
    """The Hugging Face Hub cache in use: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    return Path(constants.HF_HUB_CACHE)


def cached_revisions(repo_id: str) -> dict[str, str]:
    """{ref or commit: commit} for what the cache holds of `repo_id` (refs/ and snapshots/)."""
    repo = cache_dir() / f"models--{repo_id.replace('/', '--')}"
    out = {p.name: p.read_text().strip() for p in sorted((repo / "refs").glob("*")) if p.is_file()}
    out |= {p.name: p.name for p in sorted((repo / "snapshots").glob("*")) if p.name not in out.values()}
    return out


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot of `repo_id` at `revision` (None = main) when it holds a config and weights,
    else None; never touches the network."""
    try:
        folder = Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES,
                                                        local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None
    weights = (folder / "model.safetensors").is_file() or (folder / PICKLED_WEIGHTS).is_file()
    return folder if weights and (folder / "config.json").is_file() else None


def _not_cached(label: str, repo_id: str, revision: str | None) -> str:
    have = cached_revisions(repo_id)
    where = (f"the cache {cache_dir()} holds revisions {have}" if have
             else f"the Hugging Face cache {cache_dir()} (HF_HUB_CACHE) does not hold it")
    what = f"{repo_id} at revision {revision!r}" if revision else repo_id
    if constants.is_offline_mode():
        how = (f"HF_HUB_OFFLINE=1 forbids downloading: fetch it once with network access (unset HF_HUB_OFFLINE, "
               f"then zoo.load({label!r}) or `hf download {repo_id}`), or point HF_HUB_CACHE at a cache that has it")
    else:
        how = "the Hub could not be reached; connect and load again (it is cached after the first download)"
    return f"{label}: {what} is not in the cache: {where}; {how}"


def _http_refusal(label: str, repo_id: str, error: BaseException | None) -> str | None:
    """What to do about an HTTP answer of the Hub (huggingface_hub's snapshot_download turns a 403 or a 5xx
    into LocalEntryNotFoundError when the cache lacks the repo: the HTTP error is its cause), else None."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if not isinstance(error, HfHubHTTPError) or status is None:
        return None
    if status in (401, 403):
        return (f"{label}: the Hub refused {repo_id} (HTTP {status}): it is private or restricted; use a token "
                f"with access to it {TOKEN_HELP}")
    return (f"{label}: the Hub answered HTTP {status} for {repo_id} and the Hugging Face cache {cache_dir()} does "
            f"not hold it; load again later (https://status.huggingface.co), or on a machine that has it cached")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a Hub model repo id ORG/NAME, else HubError saying so."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"push_to={repo_id!r} is not a Hub repo id ({_first_line(e)})") from e
    if repo_id.count("/") != 1:
        raise HubError(f"push_to={repo_id!r} is not a Hub repo id; expected ORG/NAME (e.g. my-user/my-gpt)")
    return repo_id


def push(folder: str | Path, repo_id: str, *, private: bool = False, commit_message: str | None = None) -> str:
    """Upload an export folder to the Hub model repo `repo_id` (created if missing) in one commit; returns
    the commit URL. The token is the library's usual one (HF_TOKEN, or `hf auth login`); a missing or
    rejected token raises HubError with the library's message."""
    folder = Path(folder)
    check_repo_id(repo_id)
    api = huggingface_hub.HfApi()
    try:
        # token=True: the library's own check, before any request, that a token is configured
        api.create_repo(repo_id, token=True, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), token=True,
                                 commit_message=commit_message or f"zoo-export {folder.name}")
    except LocalTokenNotFoundError as e:
        raise HubError(f"cannot push to {repo_id}: {_first_line(e)} (or set HF_TOKEN)") from e
    except HfHubHTTPError as e:
        raise HubError(f"cannot push to {repo_id}: {_first_line(e)}") from e
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    log.info("pushed %s to %s", folder, url)
    return str(url)

