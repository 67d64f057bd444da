"""Download a file once, verify its sha256, and keep it in the zoo cache.

Shared by every datamodule that fetches a public corpus. Writes are atomic (a temporary file in
the destination folder, renamed when complete and verified), so an interrupted or corrupted
download never leaves a file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the expected sha256."""


class MissingExtra(ImportError):
    """A data set lives in a package of an optional extra that is not installed (the message says which)."""


def need(module: str, extra: str, purpose: str):
    """Import `module` for `purpose` or raise MissingExtra naming the zoo extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{purpose} needs {module.partition('.')[0]}, which `pip install -e .` does not "
                           f"install: python -m pip install -e \".[{extra}]\"") from e


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir` if given, else `$ZOO_CACHE`, else `~/.cache/zoo`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo").expanduser()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch `url` (http(s):// or file://) to `dest` and return `dest`.

    A file already at `dest` is reused without any network access when its sha256 matches (or
    when no `sha256` is given); a cached file with the wrong hash is deleted and fetched again.
    A download whose hash differs from `sha256` is deleted and raises `ChecksumError`.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file():
        if expected is None:
            log.info("using cached %s (not verified: no sha256 given)", dest)
            return dest
        actual = file_sha256(dest)
        if actual == expected:
            return dest
        log.warning("cached %s has sha256 %s, expected %s; deleting it and downloading again", dest, actual, expected)
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        actual = _fetch(url, fd, progress, timeout)
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"sha256 mismatch for {url}: expected {expected}, got {actual}; the download was deleted. "
                f"If the file changed upstream on purpose, pass sha256={actual!r} (or None to skip the check)."
            )
        os.replace(tmp, dest)
    except urllib.error.URLError as e:
        raise OSError(
            f"could not download {url}: {e.reason}. Check the URL and network, or put the file at {dest} yourself."
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    if expected is None:
        log.warning("downloaded %s without verification; its sha256 is %s (pass sha256= to pin it)", url, actual)
    return dest


def _fetch(url: str, fd: int, progress: bool, timeout: float) -> str:
    """Stream `url` into the open file descriptor `fd`; return the sha256 of what was written."""
    h = hashlib.sha256()
    with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, next_report = 0, 0.1
        if progress:
            log.info("downloading %s (%s)", url, f"{total / 1e6:.1f} MB" if total else "size unknown")
        while chunk := response.read(_CHUNK):
            f.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if progress and total and done / total >= next_report:
                log.info("  %3.0f%% of %s", 100 * done / total, url)
                next_report += 0.1
    return h.hexdigest()
