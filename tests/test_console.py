"""zoo-train's console (issue 13): one line per message, nothing third-party the user cannot act on, and a
bad `last.ckpt` met on resume stops the run with one line naming the file and what to do, never running
a pickled payload."""

from __future__ import annotations

import builtins
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli

RUN = ["model.n_layer=1", *[o for o in TINY if not o.startswith(("model.n_layer=", "logger="))], "logger=csv",
       "trainer.max_steps=2", "checkpoint.every_n_steps=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("console")
    r = run_cli(["zoo-train", *RUN], cwd=cwd, env={"ZOO_PLAIN_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd, r.stdout + r.stderr


def test_every_console_line_is_said_once_and_ours(trained):
    _, out = trained
    lines = [ln.strip() for ln in out.splitlines() if ln.strip() and set(ln.strip()) != {"="}]
    repeated = [ln for ln, n in Counter(lines).items() if n > 1]
    assert not repeated, f"printed more than once: {repeated}"
    for noise in ("Tip:", "litlogger", "deprecated", "FLOPs", "GPU available", "TPU available", "Traceback",
                  "`Trainer.fit` stopped", "weights_only"):
        assert noise not in out, f"{noise!r} on the console:\n{out}"
    opening = next(ln for ln in lines if ln.startswith("zoo-train: "))
    assert "gpt (" in opening and "parameters" in opening and "on pydoc" in opening and "runs/gpt_pydoc" in opening
    assert "finished at step 2" in out and "next: zoo-sample" in out
    assert len(lines) <= 25, f"{len(lines)} lines: the main job's output should fit one screen\n{out}"


def test_the_full_log_and_the_layer_table_are_in_the_run_folder(trained):
    cwd, _ = trained
    run = cwd / "runs" / "gpt_pydoc"
    assert "zoo-train: gpt" in (run / "train.log").read_text()
    table = (run / "model_summary.txt").read_text()
    assert "FLOPs" not in table and "Params" in table
    total = int(table.split("total ")[1].split(" parameters")[0].replace(",", ""))
    assert total > 0


class _Payload:
    """Unpickling this runs `open(marker, "w")`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _crafted(path: Path, marker: Path) -> None:
    good = torch.load(path, map_location="cpu", weights_only=True)
    good["callbacks"] = {"evil": _Payload(marker)}  # a real, otherwise valid checkpoint carrying the payload
    torch.save(good, path)


def _truncated(path: Path, marker: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [
    _crafted,
    lambda p, m: p.write_bytes(pickle.dumps(_Payload(m))),  # a bare pickle (legacy format) with the payload
    lambda p, m: p.write_bytes(b""),
    lambda p, m: p.write_bytes(b"this is not a checkpoint\n" * 40),
    _truncated,
], ids=["crafted", "bare-pickle", "empty", "junk", "truncated"])
def test_a_bad_last_ckpt_stops_resume_with_one_line(trained, tmp_path, damage):
    cwd, _ = trained
    ckpt_dir = cwd / "runs" / "gpt_pydoc" / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    backup = last.read_bytes()
    marker = tmp_path / "payload-ran"
    try:
        damage(last, marker)
        r = run_cli(["zoo-train", *RUN, "trainer.max_steps=4"], cwd=cwd, env={"ZOO_PLAIN_PROGRESS": "1"})
    finally:
        last.write_bytes(backup)
    assert not marker.exists(), "the pickled payload ran"
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    message = [ln for ln in r.stderr.splitlines() if ln.startswith("zoo-train: ")]
    assert len(message) == 1, r.stderr[-3000:]
    assert str(last) in message[0] and "ckpt_path=null" in message[0], message[0]
    assert "step000002.ckpt" in message[0]  # the earlier good checkpoint of the same run is offered


def test_resuming_keeps_the_metrics_already_logged(trained):
    """Lightning's CSV writer deleted metrics.csv when a run resumed; zoo's appends."""
    cwd, _ = trained
    metrics = cwd / "runs" / "gpt_pydoc" / "csv" / "metrics.csv"
    before = metrics.read_text().splitlines()
    r = run_cli(["zoo-train", *RUN, "trainer.max_steps=4"], cwd=cwd, env={"ZOO_PLAIN_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "exists and is not empty" not in r.stdout + r.stderr
    after = metrics.read_text().splitlines()
    assert len(after) > len(before)
    header = after[0].split(",")
    steps = {int(float(row.split(",")[header.index("step")])) for row in after[1:]}
    assert {0, 1, 2, 3} <= steps, steps  # the first run's steps and the resumed run's
