"""Where a registered model's files come from: the folder inside the package, zoo's download cache (a
URL entry) or the Hugging Face cache (an "hf:" entry); every registered file is checked against its pinned
sha256 before anything reads it. `resolve_entry` is the one way a registry name becomes a local folder."""

from __future__ import annotations

import json
from pathlib import Path

from zoo.data.download import ChecksumError, cache_root, download, file_sha256
from zoo.hub.registry import HUB_DIR, Entry, HubError


def resolve_entry(entry: Entry, path: str | Path | None = None) -> Path:
    """The verified local folder of `entry`: `path`, the package folder, or the download cache (zoo's for
    a URL, the Hugging Face cache for an "hf:" repo)."""
    if path is not None:
        folder = Path(path).expanduser()
    elif entry.hf_repo is not None:
        from zoo.hub.hf_hub import fetch  # huggingface_hub (and httpx) only for an entry on the Hub

        folder = fetch(entry.hf_repo, entry.revision, files=sorted(entry.files), name=entry.name)
    elif not entry.is_url:
        folder = HUB_DIR / entry.location
    else:
        folder = cache_root() / "hub" / entry.name
        for fname, sha in entry.files.items():
            download(f"{entry.location.rstrip('/')}/{fname}", folder / fname, sha256=sha)
    for fname, sha in entry.files.items():
        f = folder / fname
        if not f.is_file():
            raise HubError(f"{entry.name}: missing {f}; expected the files {sorted(entry.files)}")
        actual = file_sha256(f)
        if actual != sha and entry.hf_repo is not None and path is None:
            raise ChecksumError(f"{entry.name}: {fname} of the Hub repo {entry.hf_repo} (revision {entry.revision}) "
                                f"has sha256 {actual}, expected {sha}; nothing was loaded. The cached file "
                                f"{f.resolve()} is corrupt, or the revision does not hold the pinned file: "
                                f"delete the file and load again, or pin the revision that holds it.")
        if actual != sha:
            raise ChecksumError(f"{entry.name}: {f} has sha256 {actual}, expected {sha}: the file is truncated, "
                                f"corrupt or not this checkpoint. Delete it and load again (URL entries are "
                                f"downloaded anew), or reinstall zoo for files shipped in the package.")
    return folder


def is_hf_gpt2(config_path: Path) -> bool:
    """Whether `config_path` is a Hugging Face GPT-2 config.json (rather than a zoo export's)."""
    return hf_model_type(config_path) == "gpt2"


def hf_model_type(config_path: Path) -> str | None:
    """The `model_type` of a Hugging Face config.json ("gpt2", "imagegpt"); None for a zoo export's or no file."""
    try:
        kind = json.loads(config_path.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError, FileNotFoundError):
        return None
    return kind if isinstance(kind, str) else None
