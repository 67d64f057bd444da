"""zoo-bench: the report's structure, the correctness gate, and the ratio statistics (never speed)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

from zoo.bench import command_stem, common, run_command, run_suite, suite_stem
from zoo.bench import peers as P
from zoo.bench.report import goals

TINY_ARCH = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64)


def test_ratio_stats_are_per_round_median_min_max():
    peer = [2.0, 4.0, 3.0, 10.0]
    zoo = [1.0, 2.0, 1.0, 2.0]  # per-round ratios 2, 2, 3, 5: median 2.5 (not 19/6, the ratio of sums)
    r = common.ratio_stats(peer, zoo)
    assert r["per_round"] == [2.0, 2.0, 3.0, 5.0]
    assert (r["median"], r["min"], r["max"], r["rounds"]) == (2.5, 2.0, 5.0, 4)
    with pytest.raises(ValueError, match="equally long"):
        common.ratio_stats([1.0, 2.0], [1.0])


def test_interleaved_alternates_order_and_warms_up_untimed():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = common.interleaved(fns, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a-b, b-a, a-b
    assert [len(times["a"]), len(times["b"])] == [3, 3]
    assert all(t >= 0 for t in times["a"] + times["b"])


def test_mfu_flop_count_counts_tied_embedding_once_and_no_position_table():
    zoo = P.zoo_gpt(**TINY_ARCH)
    n = common.matmul_params(zoo)
    assert n == zoo.num_params() - zoo.transformer.wpe.weight.numel()
    assert common.gpt_flops_per_token(n, 1, 16, 16) == 6 * n + 12 * 16 * 16
    assert common.nominal_bf16_tflops("NVIDIA H200") == 989.0
    assert common.nominal_bf16_tflops("Some CPU") is None


def test_gate_passes_at_same_weights_and_catches_one_perturbed_weight():
    hf = P.hf_gpt2(**TINY_ARCH, activation="gelu_pytorch_tanh", seed=1)
    zoo = P.zoo_from_hf(hf)
    idx = torch.randint(0, 64, (2, 16))
    gate = P.check_gate("hf", zoo, hf, P.hf_logits(hf), idx, new_tokens=4)
    assert gate["max_abs_logit_diff"] < 1e-4 and gate["greedy_tokens"] == 8
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_fc.weight[0, 0] += 0.5
    with pytest.raises(P.GateError, match="logits differ from zoo's"):
        P.check_gate("hf", zoo, hf, P.hf_logits(hf), idx, new_tokens=4)


def test_gate_catches_different_greedy_tokens_when_logits_pass_the_tolerance():
    zoo = P.zoo_gpt(**TINY_ARCH)
    idx = torch.randint(0, 64, (2, 16))

    def flipped(x: torch.Tensor) -> torch.Tensor:  # within atol=100 of zoo's, but the least likely token wins
        out = zoo(x)
        return out + 50.0 * torch.nn.functional.one_hot(out.argmin(-1), 64)

    with pytest.raises(P.GateError, match="greedy tokens differ from zoo's"):
        P.check_gate("flipped", zoo, zoo, flipped, idx, new_tokens=3, atol=100.0)


def test_a_peer_failing_its_gate_is_reported_and_not_timed(monkeypatch):
    import x_transformers  # noqa: F401  (the [test] extra has it: a missing peer fails, never skips)

    from zoo.bench import gpt

    build = P.xtransformers_from_zoo

    def broken(zoo):  # the right architecture, one weight off
        xt = build(zoo)
        with torch.no_grad():
            xt.attn_layers.layers[0][1].to_q.weight[0, 0] += 0.5
        return xt

    monkeypatch.setattr(P, "xtransformers_from_zoo", broken)
    s = common.sizes("tiny")
    built, failed = gpt.build_pairs(s, torch.device("cpu"), gpt.make_batch(s, torch.device("cpu")))
    assert "x-transformers" not in built["models"] and "transformers gelu_pytorch_tanh" in built["models"]
    row = next(r for r in failed if r.name == "x-transformers")
    assert row.status == "gate failed" and "logits differ from zoo's" in row.reason and row.ratio is None


def test_xtransformers_peer_maps_onto_zoo_weights():
    import x_transformers  # noqa: F401  (the [test] extra has it: a missing peer fails, never skips)
    zoo = P.zoo_gpt(**TINY_ARCH, layer_bias=False, activation="gelu_tanh")
    xt = P.xtransformers_from_zoo(zoo)
    assert P.check_gate("x-transformers", zoo, xt, xt, torch.randint(0, 64, (2, 16)), new_tokens=3)[
        "max_abs_logit_diff"] < 1e-4
    with pytest.raises(ValueError, match="layer_bias=False"):
        P.xtransformers_from_zoo(P.zoo_gpt(**TINY_ARCH))


@pytest.mark.parametrize("switch", [{"qk_norm": True}, {"logit_softcap": 30.0}, {"activation": "relu2"}])
def test_peer_mappers_refuse_issue_23_switches_by_name(switch):
    zoo = P.zoo_gpt(**TINY_ARCH, layer_bias=False, **switch)
    name = next(iter(switch))
    with pytest.raises(ValueError, match=f"x-transformers has no counterpart for zoo's {name}="):
        P.xtransformers_from_zoo(zoo)
    with pytest.raises(ValueError, match=f"litgpt has no counterpart for zoo's {name}="):
        P.litgpt_from_zoo(zoo, litgpt_model=None)


def test_litgpt_unavailable_is_reported_with_a_reason(tmp_path, monkeypatch):
    for k in [k for k in sys.modules if k == "litgpt" or k.startswith("litgpt.")]:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setattr(P.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(P, "LITGPT_TARGET", tmp_path / "nothing")
    module, why = P.import_litgpt_model()
    assert module is None and "pip install --no-deps --target" in why and str(tmp_path) in why


def test_cuda_without_a_gpu_fails_with_a_clear_message():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="CUDA is not available here"):
        run_suite(mode="tiny", device="cuda", only=("attention",))
    with pytest.raises(SystemExit, match="accepted: gpt, decode, attention, image"):
        run_suite(mode="tiny", only=("gpt", "speed"))


@pytest.mark.parametrize("slowdown", [12.0, 0.6])
def test_quick_plan_skips_bf16_rows_where_the_probe_finds_bf16_slow(monkeypatch, capsys, slowdown):
    """Issue 25: `zoo-bench --quick` on a CPU without native bf16 drops the bf16-mixed rows and prints why."""
    import zoo.bench

    ran: list[tuple[str, tuple[str, ...]]] = []

    def section(name, s, device):  # the sections themselves are not under test: record what they were asked
        ran.append((name, s.precisions + s.lightning_precisions))
        return [], {}

    monkeypatch.setattr(common, "bf16_slowdown", lambda device: slowdown)
    monkeypatch.setattr(zoo.bench, "run_section", section)
    monkeypatch.setattr(zoo.bench, "import_litgpt_model", lambda: (None, "not needed"))
    report = run_suite(mode="quick", only=("gpt",))
    out = capsys.readouterr().out
    if slowdown > common.BF16_SLOW:
        assert ran == [("gpt", ("fp32", "fp32"))]
        assert "bf16-mixed rows skipped: a 256x256 bfloat16 matmul took 12.0x the float32 one" in out
        row = next(r for r in report["rows"] if r["section"] == "train bf16-mixed")
        assert row["status"] == "skipped" and "12.0x" in row["reason"]
    else:
        assert ran == [("gpt", ("fp32", "bf16-mixed", "fp32"))] and "skipped" not in out
    full = common.sizes("full")  # the full suite keeps every row
    assert common.skip_slow_bf16(full, torch.device("cpu")) is None and "bf16-mixed" in full.precisions


def test_bf16_probe_measures_a_ratio():
    x = common.bf16_slowdown("cpu", n=32, calls=2)
    assert math.isfinite(x) and x > 0


def test_goals_read_met_and_not_met_off_the_rows():
    def row(section, name, median, figures):
        return common.Row(section, name, "x", {"median": median, "min": median * 0.9, "max": median * 1.1,
                                               "rounds": 3, "per_round": [median] * 3}, figures).to_dict()

    report = {"config": {"sizes": {"precisions": ["fp32"]}}, "rows": [
        row("train fp32", "zoo vs transformers gelu_pytorch_tanh", 1.10, {"zoo MFU": 0.5, "peer MFU": 0.45}),
        row("train fp32", "zoo bias=False vs x-transformers", 1.01, {"zoo MFU": 0.5, "peer MFU": 0.5}),
        row("train fp32", "zoo vs transformers gelu_new", 0.5, {"zoo MFU": 0.5, "peer MFU": 0.9}),  # not matched
        row("decode batch 1", "zoo vs transformers dynamic cache", 1.7, {"zoo tokens/s": 170, "peer tokens/s": 100}),
        row("attention T=1024", "fwd: zoo relative vs causal SDPA", 2.0, {"zoo relative ms": 2, "causal SDPA ms": 1}),
    ]}
    g = {x["goal"]: x for x in goals(report)}
    train = g["training tokens/s vs best matched peer, fp32"]
    assert train["measured"] == "1.01x" and train["met"] is False and "x-transformers" in train["reason"]
    assert g["decode tokens/s at batch 1 vs transformers default"]["met"] is True
    assert g["relative attention fwd, T=1024"]["met"] is False


def test_each_zoo_bench_command_writes_its_own_files():
    """Issue 22: a full `zoo-bench` overwrote the `--quick` figures the README cited. Every command that measures
    differently gets its own stem; the committed files keep the names their commands write."""
    stems = {
        "zoo-bench": suite_stem(),
        "zoo-bench --quick": suite_stem(mode="quick"),
        "zoo-bench --tiny": suite_stem(mode="tiny"),
        "zoo-bench --device cuda": suite_stem("cuda"),
        "zoo-bench --quick --only gpt,decode": suite_stem(mode="quick", only=("gpt", "decode")),
        "zoo-bench --only decode,gpt --rounds 9": suite_stem(only=("decode", "gpt"), rounds=9),
        "zoo-bench --rounds 9": suite_stem(rounds=9),
    }
    assert len(set(stems.values())) == len(stems), stems
    assert stems["zoo-bench"] == "suite_cpu" and stems["zoo-bench --quick"] == "suite_cpu_quick"
    assert stems["zoo-bench --device cuda"] == "suite_cuda"
    assert suite_stem("cuda", only=("gpt", "attention", "image", "roofline", "decode")) == "suite_cuda"  # gpu.sh order
    assert stems["zoo-bench --only decode,gpt --rounds 9"] == "suite_cpu_only-decode-gpt_rounds-9"
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    for stem, command in (("suite_cpu", "zoo-bench"), ("suite_cpu_quick", "zoo-bench --quick")):
        assert json.loads((root / f"{stem}.json").read_text())["command"] == command, stem
        assert f"Command: `{command}`." in (root / f"{stem}.md").read_text(), stem


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_script(name: str):
    """benchmarks/<name>.py imported as a module: defining its functions runs no benchmark."""
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_stem(name: str, argv: list[str]) -> str:
    """The file name (no suffix) `python benchmarks/<name>.py ARGV` writes without an explicit output path."""
    module = bench_script(name)
    return module.stem(module.parser().parse_args(argv))


# Every benchmarks/*.py that writes files: (the command line of its committed files, their stem, other option sets
# that must each get a name of their own). The committed command is the default invocation except where noted.
WRITERS: dict[str, tuple[list[str], str, list[list[str]]]] = {
    "alibi_extrapolation": (["--steps", "600", "--T", "64"], "alibi_extrapolation",
                            [["--steps", "300"], ["--T", "128"], ["--batch", "16"], ["--T", "128", "--steps", "300"]]),
    # committed with --jsb (an input path, not in the name)
    "decode_roofline": (["--jsb", "../shared/data/jsb/Jsb16thSeparated.json"], "decode_roofline",
                        [["--rounds", "5"], ["--new", "64"]]),
    # committed with --rounds 7 (the default is 5): the file keeps that name
    "decode_overhead": (["--rounds", "7"], "decode_overhead_rounds-7",
                        [[], ["--tokens", "32"], ["--before", "HEAD~1"], ["--names", "gpt-pydoc"]]),
    "finetune": ([], "finetune", []),  # no options: every setting is fixed in the script
    "flex_attention": (["--rounds", "5"], "flex_attention", [["--rounds", "3"], ["--T", "2048"], ["--window", "128"]]),
    "gpt_cpu": ([], "gpt_cpu", [["--quick"], ["--rounds", "9"], ["--vocab", "50257"], ["--quick", "--rounds", "9"]]),
    "image_gpt": ([], "image_gpt", [["--threads", "2"], ["--mnist-steps", "300"]]),
    "imagegpt": ([], "imagegpt", [["--rounds", "3"], ["--model", "imagegpt-small", "--images", "pics"],
                                  ["--batch", "8"]]),
    "load_time": ([], "load_time", [["--rounds", "3"], ["--threads", "2"]]),
    # committed with --jsb (not the default: without it the JSB part is skipped, music_ablation_no-jsb)
    "music_ablation": (["--cache-dir", "/tmp/zoo_music_cache", "--jsb", "../shared/data/jsb/Jsb16thSeparated.json"],
                       "music_ablation", [[], ["--quick"], ["--steps", "200"], ["--arms", "relative,absolute"],
                                          ["--jsb", "x.json", "--quick"], ["--jsb", "x.json", "--jsb-steps", "9"]]),
    "music_styles": (["music-transformer-styles", "--samples", "20", "--events", "512", "--guidance", "1", "2", "3",
                      "4", "6", "--stats-guidance", "4"], "music_styles",
                     [["runs/s/last.ckpt"], ["--guidance", "1", "2"], ["--stats-guidance", "6"], ["--samples", "5"]]),
    # committed with --rounds 7 (the default is 9) and, on CUDA, --naive-max-gib 40 (the files keep those names)
    "relative_attention": (["--rounds", "7"], "relative_attention_rounds-7",
                           [[], ["--quick"], ["--device", "cuda"], ["--device", "cuda", "--naive-max-gib", "40"],
                            ["--device", "cuda", "--dtype", "bfloat16", "--naive-max-gib", "40"],
                            ["--lengths", "512"], ["--chunk", "64"], ["--naive-max-gib", "0.5"]]),
    "serve_load": (["--requests", "200", "--concurrency", "16", "--max-new-tokens", "8"], "serve_load",
                   [["--requests", "50"], ["--concurrency", "4"], ["--max-new-tokens", "32"]]),
    "serve_soak": ([], "serve_soak", [["--seconds", "60"], ["--concurrency", "8"], ["--big-mb", "100"]]),
    "shipped_checkpoints": ([], "shipped_checkpoints", [["--before", "HEAD~3"], ["--names", "image-gpt-digits"]]),
    "speculative": ([], "speculative", [["--rounds", "3"], ["--ks", "4"], ["--tokens", "50"],
                                        ["--music-tokens", "99"]]),
    "streaming": (["--gb", "1.0", "--workers", "2", "--time-limit", "360"], "streaming",
                  [["--gb", "0.03"], ["--workers", "1"], ["--time-limit", "60"]]),
    # rows keyed by run name are merged into one file: a rerun of some rows keeps the others
    "text2image": ([], "text2image", []),
    "time_to_loss": ([], "time_to_loss", [["--steps", "1000"], ["--fast-steps", "800"], ["--eval-every", "25"],
                                          ["--steps", "1000", "--fast-steps", "800"]]),
    # rows keyed by member are merged into one file: `--members` reruns some rows and keeps the others
    "time_to_loss_members": ([], "time_to_loss_members", [["--eval-every", "25"]]),
}
# Scripts that print their result (a JSON line) and write no file unless given a path: their committed .json / .md
# are write-ups assembled by hand from several runs (different checkpoints, some under the same command line).
PRINT_ONLY = {"jsb": "benchmarks/jsb.json and jsb.md: the printed lines of several checkpoints' runs",
              "music_stats": "music_stats_{bach,bach_2500,bach_shipped,jsb}.json: printed lines of four runs "
                             "(bach and bach_shipped share one command line, two versions of the checkpoint)"}
# Committed .md files that no command writes by that name (reason each); every other one names its command.
NO_COMMAND = {"gqa": "a `python -c` one-liner's printed result, written up by hand",
              "gpu_smoke": "benchmarks/gpu_smoke.sh prints; the page is written up by hand from its output",
              "jsb": PRINT_ONLY["jsb"], "music_stats": "the printed results of three music_stats.py runs, by hand",
              "suite_cpu_after_refactor": "a `zoo-bench --quick` report kept by hand under its own name, beside "
                                          "suite_cpu_quick.md, to compare the two"}


def test_benchmark_scripts_name_their_files_after_non_default_options():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--lengths", type=int, nargs="*", default=[1024, 2048])
    ap.add_argument("--gib", type=float, default=8.0)
    ap.add_argument("--out-dir", default="benchmarks")
    stem = lambda *argv: common.output_stem("x", common.changed_options(ap, ap.parse_args(argv), ignore=["out_dir"]))  # noqa: E731
    assert stem() == stem("--out-dir", "/tmp") == "x"
    assert stem("--quick") == "x_quick" and stem("--rounds", "7") == "x_rounds-7"
    assert stem("--lengths", "512", "4096", "--quick") == "x_quick_lengths-512-4096"  # the parser's order
    assert stem("--gib", "40") == "x_gib-40" and stem("--gib", "0.5") == "x_gib-0.5"  # floats as %g


def test_every_benchmark_script_names_its_files_from_its_options():
    """Issue 22: each benchmarks/*.py writer's name comes from `stem(args)` (importable, runs nothing); the committed
    command's name is its committed file, and every other option set gets a name of its own."""
    scripts = {p.stem for p in BENCH.glob("*.py")}
    assert scripts == set(WRITERS) | set(PRINT_ONLY), scripts ^ (set(WRITERS) | set(PRINT_ONLY))
    for name, (committed, committed_stem, others) in WRITERS.items():
        got = script_stem(name, committed)
        assert got == committed_stem, (name, got)
        assert (BENCH / f"{got}.md").is_file() or (BENCH / f"{got}.json").is_file(), name
        names = [script_stem(name, argv) for argv in [committed, *others]]
        assert len(set(names)) == len(names), (name, names)
        assert all(n == name or n.startswith(f"{name}_") for n in names), (name, names)
    for name in PRINT_ONLY:
        assert not hasattr(bench_script(name), "stem"), name
    # where to read and write does not name the file; what is measured does
    inputs = ["--jsb", "a.json", "--cache-dir", "/c", "--out-dir", "/o"]
    assert script_stem("music_ablation", inputs) == "music_ablation"
    assert script_stem("relative_attention", ["--rounds", "7", "--out", "/tmp/x"]) == "relative_attention_rounds-7"
    assert script_stem("image_gpt", ["--render-only"]) == "image_gpt"  # re-renders the file it names
    assert script_stem("music_styles", ["--stats-guidance", "4"]) == "music_styles"  # the scale chosen without it
    assert script_stem("music_styles", ["--guidance", "1", "2"]) == "music_styles_guidance-1-2"
    assert script_stem("text2image", ["captioned_digits@3000"]) == "text2image"


def _recorded_command(text: str) -> tuple[str, list[str]] | None:
    """The first command a benchmark page records: (script name or "zoo-bench", its arguments)."""
    inline = re.search(r"(?<!`)`(?:PYTHONPATH=\. )?(?:python )?(?:benchmarks/(\w+)\.py|(zoo-bench))((?:\s[^`]*)?)`",
                       text)
    block = re.search(r"^(?:PYTHONPATH=\. )?python benchmarks/(\w+)\.py([^#`\n]*)", text, re.MULTILINE)
    if inline:
        return inline.group(1) or inline.group(2), shlex.split(inline.group(3))
    if block:
        return block.group(1), shlex.split(block.group(2))
    return None


def test_every_benchmark_page_is_named_for_the_command_it_records():
    """Issue 22: a committed benchmarks/*.md names its command, and that command writes this very file by default,
    so no other command can overwrite it silently (the pages no command writes are listed with their reason)."""
    pages = {p.stem: p for p in BENCH.glob("*.md")}
    assert set(NO_COMMAND) <= set(pages), set(NO_COMMAND) - set(pages)
    for page, path in sorted(pages.items()):
        if page in NO_COMMAND:
            continue
        found = _recorded_command(path.read_text())
        assert found is not None, f"benchmarks/{page}.md records no command"
        script, argv = found
        got = command_stem(argv) if script == "zoo-bench" else script_stem(script, argv)
        assert got == page, (page, script, argv, got)


def test_tiny_suite_writes_json_and_markdown(tmp_path, capsys):
    report = run_command(["--tiny", "--rounds", "2", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "suite_cpu_tiny_rounds-2.json").read_text())  # named for the command
    assert on_disk["config"]["mode"] == "tiny" and on_disk["config"]["sections"] == list(common.SECTIONS)
    for key in ("machine", "versions", "load_before", "load_after", "wall_s", "rows", "goals", "context", "command"):
        assert key in on_disk, key
    assert {"torch", "transformers", "x-transformers", "lightning", "litgpt"} <= set(on_disk["versions"])
    sections = {r["section"].split()[0] for r in on_disk["rows"]}
    assert {"train", "decode", "attention", "image"} <= sections
    failed = [r for r in on_disk["rows"] if r["status"] == "failed"]
    assert not failed, failed
    timed = [r for r in on_disk["rows"] if r["status"] == "ok"]
    assert len(timed) >= 10
    for r in timed:
        q = r["ratio"]
        assert q["rounds"] == 2 and q["min"] <= q["median"] <= q["max"] and math.isfinite(q["median"]), r
    for r in on_disk["rows"]:
        if r["status"] != "ok":
            assert r["reason"], r
    assert any(r["name"] == "zoo Lightning Trainer vs plain PyTorch loop" for r in timed)
    for g in on_disk["goals"]:  # met, missed or n/a, and always why
        assert g["met"] in (True, False, None) and isinstance(g["reason"], str) and g["reason"].strip(), g
    assert len(on_disk["goals"]) == len(report["goals"]) > 0
    md = (tmp_path / "suite_cpu_tiny_rounds-2.md").read_text()
    assert "## Goals" in md and "| section | comparison |" in md and on_disk["machine"]["name"] in md
    assert "wrote" in capsys.readouterr().out
