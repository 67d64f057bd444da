"""Shipped checkpoints before and after issue 23's fast recipe, measured side by side in one run.

    python benchmarks/shipped_checkpoints.py     # writes benchmarks/shipped_checkpoints.json and .md

For each retrained name, the checkpoint shipped before (its files as of `--before`, read with `git show`) and the one
shipped now (zoo/hub/NAME) are loaded and scored with the same code: the card's metric (validation loss, nats/token,
zoo.hub.export.measure_loss, as tests/test_hub.py re-measures it) and, for the digit image model, test bits/dim with
the class (zoo.eval.bits_per_dim, as benchmarks/image_gpt.py scores it). gpt-pydoc's previous card scored the first
64 validation windows (its run's data.max_val_windows), the new one every window: both checkpoints are also scored
on every window, the comparable figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from zoo.bench.common import changed_options, cpu_name, output_stem

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "7d4d998"  # main before the retrained checkpoints (session 5's last commit)
RETRAINED = ["gpt-pydoc", "image-gpt-digits", "text2image-digits", "music-transformer-jsb",
             "music-transformer-styles"]
JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=BEFORE, help="git revision holding the previous checkpoints")
    ap.add_argument("--names", nargs="*", default=RETRAINED, help="registered names to compare")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--jsb", type=Path, default=JSB, help="Jsb16thSeparated.json, for music-transformer-jsb")
    return ap


def stem(args: argparse.Namespace) -> str:
    return output_stem("shipped_checkpoints", changed_options(parser(), args, ignore=["out_dir", "jsb"]))


def old_folder(name: str, rev: str, dest: Path) -> Path:
    """zoo/hub/NAME's files as of `rev`, written into `dest`/NAME."""
    folder = dest / name
    folder.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:zoo/hub/{name}"],
                           check=True, capture_output=True, text=True).stdout.split()
    for f in files:
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:zoo/hub/{name}/{f}"], check=True,
                              capture_output=True).stdout
        (folder / f).write_bytes(blob)
    return folder


def score(name: str, source: str | Path, jsb: Path = JSB) -> dict:
    import zoo
    from zoo.hub.export import measure_loss

    m = zoo.load(source)
    card = json.loads((Path(source) / "config.json").read_text())["card"] if Path(str(source)).is_dir() else {}
    data = {"path": str(jsb)} if name == "music-transformer-jsb" else None
    out = {"val_loss": measure_loss(m, data=data), "steps": card.get("steps"),
           "train_command": card.get("train_command")}
    if name == "music-transformer-jsb":  # the paper's scoring (benchmarks/jsb.py): at least half a block of context
        import importlib.util

        from zoo.data.music import load_jsb_json

        spec = importlib.util.spec_from_file_location("jsb_bench", ROOT / "benchmarks" / "jsb.py")
        jsb_bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(jsb_bench)
        out["jsb_val_strided"] = jsb_bench.evaluate(m.model, m.codec, load_jsb_json(jsb, m.codec)["val"][1])["strided"]
    if name == "gpt-pydoc":  # the old card scored 64 validation windows, the new one all of them: both on all
        out["val_loss_every_window"] = measure_loss(m, data={"max_val_windows": None})
    if name == "image-gpt-digits":
        from zoo.data.image import DigitsDataModule
        from zoo.eval import bits_per_dim

        dm = DigitsDataModule()
        dm.setup()
        levels, labels = dm.splits["test"]
        out["test_bpd"] = bits_per_dim(m.model.float().eval(), m.codec, levels, labels)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    torch.set_num_threads(1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            rows[name] = {"before": score(name, old_folder(name, args.before, Path(tmp)), args.jsb),
                          "now": score(name, ROOT / "zoo" / "hub" / name, args.jsb)}
            print(json.dumps({name: rows[name]}), flush=True)
    report = {"command": " ".join(["python benchmarks/shipped_checkpoints.py", *(argv or sys.argv[1:])]),
              "cpu": cpu_name(), "torch": torch.__version__, "before": args.before,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "checkpoints": rows}
    out = args.out_dir / stem(args)
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    print(f"wrote {out}.json and {out}.md")
    return report


def markdown(r: dict) -> str:
    lines = ["# Shipped checkpoints before and after the fast recipe (issue 23)", "",
             f"Command: `{r['command']}`. CPU: {r['cpu']}; torch {r['torch']}; measured {r['measured']}. The previous "
             f"checkpoints are read from git revision {r['before']}.", "", __doc__.split("\n\n", 2)[2].strip(), "",
             "| name | before: val loss | now: val loss | before: test bits/dim (image) or JSB val, paper's scoring "
             "(music) | now: the same | now trained by |",
             "|---|---|---|---|---|---|"]
    for name, row in r["checkpoints"].items():
        b, n = row["before"], row["now"]
        bpd = [f"{x['test_bpd']:.3f}" if "test_bpd" in x else f"{x['jsb_val_strided']:.4f}"
               if "jsb_val_strided" in x else "-" for x in (b, n)]
        val = [f"{x['val_loss']:.4f}" + (f" (every window: {x['val_loss_every_window']:.4f})"
                                          if "val_loss_every_window" in x else "") for x in (b, n)]
        lines.append(f"| `{name}` | {val[0]} | **{val[1]}** | {bpd[0]} | {bpd[1]} | "
                     f"`{n['train_command']}` |")
    lines += ["", "Not retrained: music-transformer-bach (its numbers are unchanged; "
              "benchmarks/time_to_loss_members.md has the recipes' measurements). music-transformer-styles' style "
              "accuracy of guided samples, before and now: benchmarks/music_styles.md.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
