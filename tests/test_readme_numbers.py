"""Every measured figure in README.md and docs/*.md is the figure a committed file holds (issue 22).

Each entry of FIGURES ties a README/docs phrase (a regex matching exactly once, one group per figure) to the
file the figure comes from: a JSON key path (a dict step selects the list item whose fields match it), or a
regex with one group for a Markdown file that has no JSON. A figure must equal the source rounded to the
digits printed (half up). The benchmark table and the zoo table's measured columns must be covered by the
mapping entirely, so a new figure without a source fails; every `benchmarks/*.md` the README names exists.
Pure file reading, except the unigram baseline, which no file holds and is re-measured (as tests/test_hub.py
re-measures the model cards).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = "README.md"
SUITE = "benchmarks/suite_cpu_quick.json"  # `zoo-bench --quick`, the run the benchmark table cites


@dataclass(frozen=True)
class Src:
    """Where one figure comes from: `file` (repo-relative), `key` (JSON path, or a one-group regex for .md),
    times `scale`; several keys with `agg` ('min' / 'max') for a printed range."""

    file: str
    key: Any
    scale: float = 1.0
    agg: str | None = None


def row(section: str, name: str, *rest: str) -> tuple:
    return ("rows", {"section": section, "name": name}, "ratio", "median", *rest)


def goal(name: str, field: str = "measured") -> tuple:
    return ("goals", {"goal": name}, field)


def card(name: str, field: str) -> Src:
    return Src(f"zoo/hub/{name}/config.json", ("card", field), 1e-6 if field == "parameters" else 1.0)


def ratio(section: str, name: str, stat: str = "median") -> Src:
    return Src(SUITE, ("rows", {"section": section, "name": name}, "ratio", stat))


FT = "benchmarks/finetune.json"
IMG = "benchmarks/image_gpt.json"
T2I = "benchmarks/text2image.json"
STY = "benchmarks/music_styles.json"
REL = "benchmarks/relative_attention_rounds-7.json"
ROOF = "benchmarks/decode_roofline.json"


def roof(name: str, scale: float = 1.0) -> Src:
    """A batch-1 row of the decode roofline benchmark: its median ratio."""
    return Src(ROOF, ("roofline", "rows", {"section": "roofline batch 1", "name": name}, "ratio", "median"), scale)
TTL = "benchmarks/time_to_loss.json"
TTLM = "benchmarks/time_to_loss_members.json"
SHIP = "benchmarks/shipped_checkpoints.json"
STREAM = "benchmarks/streaming.md"
FT_ARMS = [(m, arm) for m in ("text", "music") for arm in ("lora", "lora_attn")]

# (document, phrase regex with one group per figure, one Src per group)
FIGURES: list[tuple[str, str, list[Src]]] = [
    # --- the zoo table: measured column and checkpoint column ---
    (README, r"val \*\*([\d.]+)\*\* nats/char", [card("gpt-pydoc", "metric_value")]),
    (README, r"`gpt-pydoc` \(([\d.]+) M params, val ([\d.]+)\)",
     [card("gpt-pydoc", "parameters"), card("gpt-pydoc", "metric_value")]),
    (README, r"`gpt-pydoc-draft` \(([\d.]+) M, val ([\d.]+)\)",
     [card("gpt-pydoc-draft", "parameters"), card("gpt-pydoc-draft", "metric_value")]),
    (README, r"test \*\*([\d.]+)\*\* bits/dim \(independent pixels ([\d.]+)\); class accuracy of samples "
             r"([\d.]+), \*\*([\d.]+)\*\* with guidance 2",
     [Src(IMG, ("patch", "scores", "test_bpd")), Src(IMG, ("digits", "independent_pixel_bpd_per_class")),
      Src(IMG, ("patch", "scores", "sampling", "None", "class_accuracy")),
      Src(IMG, ("patch", "scores", "sampling", "2.0", "class_accuracy"))]),
    (README, r"`image-gpt-digits` \(([\d.]+) M, val ([\d.]+)\)",
     [card("image-gpt-digits", "parameters"), card("image-gpt-digits", "metric_value")]),
    (README, r"val \*\*([\d.]+)\*\* nats/event vs ([\d.]+) with learned absolute positions",
     [Src("benchmarks/music_ablation.json", ("bach", "arms", "relative", "val", "nll")),
      Src("benchmarks/music_ablation.json", ("bach", "arms", "absolute", "val", "nll"))]),
    (README, r"JSB Chorales val \*\*([\d.]+)\*\* nats/token scored as the paper's table \(paper: ([\d.]+); at 4,500 "
             r"steps relative ([\d.]+) vs learned absolute positions ([\d.]+)\)",
     [Src("benchmarks/jsb.md", r"\(`music-transformer-jsb`\)\*\* \| 10,000 \| \*\*([\d.]+)\*\*"),
      Src("benchmarks/jsb.md", r"Huang et al\. 2018, Table 1: relative attention \| \| ([\d.]+)"),
      Src("benchmarks/jsb.md", r"the same run at 4,500 steps \| 4,500 \| ([\d.]+)"),
      Src("benchmarks/jsb.md", r"learned absolute positions, same size, recipe and steps \| 4,500 \| ([\d.]+)")]),
    (README, r"classifier trained on real pieces\): ([\d.]+) unguided, \*\*([\d.]+)\*\* with guidance 4",
     [Src(STY, ("guidance", "1.0", "accuracy")), Src(STY, ("guidance", "4.0", "accuracy"))]),
    (README, r"`music-transformer-bach` \(([\d.]+) M, val ([\d.]+)\)",
     [card("music-transformer-bach", "parameters"), card("music-transformer-bach", "metric_value")]),
    (README, r"`music-transformer-jsb` \(([\d.]+) M, JSB val ([\d.]+)\)",
     [card("music-transformer-jsb", "parameters"),
      Src("benchmarks/jsb.md", r"\(`music-transformer-jsb`\)\*\* \| 10,000 \| \*\*([\d.]+)\*\*")]),
    (README, r"`music-transformer-styles` \(([\d.]+) M, six styles, val ([\d.]+)\)",
     [card("music-transformer-styles", "parameters"), card("music-transformer-styles", "metric_value")]),
    (README, r"held-out captions drawn correctly: ([\d.]+) plain, \*\*([\d.]+)\*\* with guidance 3",
     [Src(T2I, ("captioned_digits", "faithfulness", "test_guidance_1")),
      Src(T2I, ("captioned_digits", "faithfulness", "test_guidance_3"))]),
    (README, r"`text2image-digits` \(([\d.]+) M, val ([\d.]+)\)",
     [card("text2image-digits", "parameters"), card("text2image-digits", "metric_value")]),
    # --- the gallery ---
    (README, r"about ([\d.]+) notes sound at once \(the chorales: ([\d.]+)\) and ([\d.]+) % of notes last",
     [Src("benchmarks/music_stats_bach_shipped.json", ("samples", "polyphony")),
      Src("benchmarks/music_stats_bach_shipped.json", ("reference", "polyphony")),
      Src("benchmarks/music_stats_bach_shipped.json", ("samples", "held_over_4s"), 100)]),
    (README, r"Validation NLL ([\d.]+) nats/token scored as Huang",
     [Src("benchmarks/jsb.md", r"\(`music-transformer-jsb`\)\*\* \| 10,000 \| \*\*([\d.]+)\*\*")]),
    (README, r"names the style of\s+(\d+) % of such samples correctly \(Bach (\d+) %\), (\d+) % without guidance",
     [Src(STY, ("guidance", "4.0", "accuracy"), 100), Src(STY, ("guidance", "4.0", "per_style", 0), 100),
      Src(STY, ("guidance", "1.0", "accuracy"), 100)]),
    *[(README, rf"\| {style} \| \[MIDI\].*\| ([\d.]+) \|$", [Src(STY, ("guidance", "4.0", "per_style", i))])
      for i, style in enumerate(("bach", "palestrina", "monteverdi", "quartets", "folk", "irish"))],
    # --- prose ---
    (README, r"`music-transformer-styles` \(val ([\d.]+) → ([\d.]+); Bach named in ([\d.]+) of guided samples, "
             r"was ([\d.]+):",
     [Src("benchmarks/music_styles.md", r"Previous checkpoint \(session 7: AdamW \+ cosine, two legs, "
                                        r"validation loss ([\d.]+)\)"),
      card("music-transformer-styles", "metric_value"), Src(STY, ("guidance", "4.0", "per_style", 0)),
      Src("benchmarks/music_styles.md", r"\| 4 \| \*\*0.80\*\* \| ([\d.]+) \|")]),
    (README, r"text ([\d.]+) vs\s+([\d.]+), music ([\d.]+) vs ([\d.]+) nats/token\) and LoRA rank 8 reaches "
             r"(\d+)–(\d+) % of full fine-tuning's gain with\s+(\d+)–(\d+) % of the parameters",
     [Src(FT, ("text", "results", "full", "val_loss")), Src(FT, ("text", "results", "scratch", "val_loss")),
      Src(FT, ("music", "results", "full", "val_loss")), Src(FT, ("music", "results", "scratch", "val_loss")),
      Src(FT, [(m, "results", a, "gain_share") for m, a in FT_ARMS], 100, "min"),
      Src(FT, [(m, "results", a, "gain_share") for m, a in FT_ARMS], 100, "max"),
      Src(FT, [(m, "results", a, "trainable_share") for m, a in FT_ARMS], 100, "min"),
      Src(FT, [(m, "results", a, "trainable_share") for m, a in FT_ARMS], 100, "max")]),
    (README, r"([\d.]+) GB streamed with ([\d.]+) MB of resident-memory growth, the loader at ([\d.]+) M tokens/s\s+"
             r"against the step's (\d+) k",
     [Src(STREAM, r"\| text generated \| ([\d.]+) GB"), Src(STREAM, r"\*\*RSS growth\*\* .*\| \*\*(\d+) MB\*\*"),
      Src(STREAM, r"\*\*loader tokens/s\*\* \| \*\*([\d,]+)\*\*", 1e-6),
      Src(STREAM, r"\*\*(\d+) tokens/s\*\* \|", 1e-3)]),
    (README, r"held ([\d.]+) nats/char at 4× the training\s+length where rotary went from ([\d.]+) to ([\d.]+)",
     [Src("benchmarks/alibi_extrapolation.json", ("results", "alibi", "val_loss_256")),
      Src("benchmarks/alibi_extrapolation.json", ("results", "rotary", "val_loss_64")),
      Src("benchmarks/alibi_extrapolation.json", ("results", "rotary", "val_loss_256"))]),
    (README, r"final validation loss \(([\d.]+) nats/char after its 2,000 steps\) in \*\*([\d.]+)×\*\* nanoGPT's "
             r"training time \(goal\s+([\d.]+)×: met\) and today's AdamW recipe's final loss \(([\d.]+)\) in "
             r"\*\*([\d.]+)×\*\* its time \(goal ([\d.]+)×: met;",
     [Src(TTL, ("nanogpt", "val_loss")), Src(TTL, ("ratios", "fast / nanoGPT, to nanoGPT's final loss")),
      Src("benchmarks/time_to_loss.md", r"\| fast / nanoGPT, to nanoGPT's final loss \| [\d.]+x \| <= ([\d.]+) \|"),
      Src(TTL, ("today_final", "val_loss")), Src(TTL, ("ratios", "fast / today, to today's final loss")),
      Src("benchmarks/time_to_loss.md", r"\| fast / today, to today's final loss \| [\d.]+x \| <= ([\d.]+) \|")]),
    (README, r"\): text \*\*([\d.]+)×\*\*, image \*\*([\d.]+)×\*\*,\s+text-to-image \*\*([\d.]+)×\*\*, music "
             r"\*\*([\d.]+)×\*\* \(goal ([\d.]+)×\)",
     [*(Src(TTLM, ("members", m, "ratio")) for m in ("text", "image", "text2image", "music")), Src(TTLM, ("goal",))]),
    (README, r"retrained `gpt-pydoc` \(([\d.]+) → ([\d.]+) nats/char\), `image-gpt-digits` \(test ([\d.]+) → ([\d.]+) "
             r"bits/dim\), `text2image-digits` \(([\d.]+) → ([\d.]+);",
     [Src(SHIP, ("checkpoints", "gpt-pydoc", when, "val_loss_every_window")) for when in ("before", "now")]
     + [Src(SHIP, ("checkpoints", "image-gpt-digits", when, "test_bpd")) for when in ("before", "now")]
     + [Src(SHIP, ("checkpoints", "text2image-digits", when, "val_loss")) for when in ("before", "now")]),
    (README, r"`music-transformer-jsb`\s+\(JSB val ([\d.]+) → \*\*([\d.]+)\*\* as the paper scores it; goal ([\d.]+):",
     [Src(SHIP, ("checkpoints", "music-transformer-jsb", when, "jsb_val_strided")) for when in ("before", "now")]
     + [Src("benchmarks/jsb.md", r"\*\*≤ ([\d.]+) in one run")]),
    # --- the benchmark table (benchmarks/suite_cpu_quick.md and benchmarks/relative_attention_rounds-7.md) ---
    (README, r"1 thread, quiet machine, (\d+) s; full table", [Src(SUITE, ("wall_s",))]),
    (README, r"GPT2LMHeadModel \(its default `gelu_new`\) \| \*\*([\d.]+)×\*\* \[([\d.]+), ([\d.]+)\]",
     [ratio("train fp32", "zoo vs transformers gelu_new", s) for s in ("median", "min", "max")]),
    (README, r"fp32, vs the matched peers \(HF `gelu_pytorch_tanh`; x-transformers; litgpt\) \| "
             r"([\d.]+)× \[([\d.]+), ([\d.]+)\]; ([\d.]+)×; ([\d.]+)×",
     [*(ratio("train fp32", "zoo vs transformers gelu_pytorch_tanh", s) for s in ("median", "min", "max")),
      ratio("train fp32", "zoo bias=False vs x-transformers"), ratio("train fp32", "zoo position=rotary vs litgpt")]),
    (README, r"bf16-mixed, vs the matched peers \| ([\d.]+)×; ([\d.]+)×; ([\d.]+)×",
     [ratio("train bf16-mixed", "zoo vs transformers gelu_pytorch_tanh"),
      ratio("train bf16-mixed", "zoo bias=False vs x-transformers"),
      ratio("train bf16-mixed", "zoo position=rotary vs litgpt")]),
    (README, r"\(peers: (\d+)–(\d+)% / (\d+)–(\d+)%\) \| (\d+)% / (\d+)%",
     [Src(SUITE, goal("MFU, fp32", "reason")), Src(SUITE, goal("MFU, fp32", "reason")),
      Src(SUITE, goal("MFU, bf16-mixed", "reason")), Src(SUITE, goal("MFU, bf16-mixed", "reason")),
      Src(SUITE, goal("MFU, fp32")), Src(SUITE, goal("MFU, bf16-mixed"))]),
    (README, r"plain PyTorch loop \| ([−\-+\d.]+)% \(no overhead\)", [Src(SUITE, goal("Lightning overhead, fp32"))]),
    (README, r"batch 1 / 8 \(256 tokens, same tokens\) \| \*\*([\d.]+)×\*\* / ([\d.]+)×",
     [ratio("decode batch 1", "zoo vs transformers dynamic cache"),
      ratio("decode batch 8", "zoo vs transformers dynamic cache")]),
    (README, r"sampling\s+([\d.]+)× as fast as `transformers`' `generate` \(`benchmarks/imagegpt.md`\)",
     [Src("benchmarks/imagegpt.json", ("transformers_over_zoo", "median"))]),
    (README, r"memory roofline \(`benchmarks/decode_roofline.md`\) \| \*\*([\d.]+)×\*\* / ([\d.]+)×; (\d+)%",
     [roof(f"zoo {q} vs zoo fp32") for q in ("int8", "int4")] + [roof("zoo fp32: achieved / roofline", 100.0)]),
    (README, r"T=1024: forward / forward\+backward \| ([\d.]+)× / ([\d.]+)×",
     [ratio("attention T=1024", "fwd: zoo relative vs causal SDPA"),
      ratio("attention T=1024", "fwd+bwd: zoo relative vs causal SDPA")]),
    (README, r"\| fwd ([\d.]+)× / ([\d.]+)×; fwd\+bwd ([\d.]+)× / ([\d.]+)× \|",
     [Src(REL, ("results", {"T": t}, mode, "zoo_relative", "ratio_vs_causal_sdpa"))
      for mode in ("fwd", "fwd+bwd") for t in (2048, 4096)]),
    (README, r"naive Shaw, T=1024: time / peak memory \(`benchmarks/relative_attention_rounds-7.md`\) \| "
             r"(\d+)× / (\d+)× less",
     [Src(REL, ("results", {"T": 1024}, "fwd", "naive_shaw", "ratio_vs_causal_sdpa")),
      Src(REL, ("results", {"T": 1024}, "memory_ratio_naive_over_zoo"))]),
    (README, r"batch 1 / 16\) \| ([\d.]+)× / ([\d.]+)×",
     [ratio("image batch 1", "KV cache vs recompute"), ratio("image batch 16", "KV cache vs recompute")]),
    # --- prose under the benchmark table ---
    (README, r"digits ([\d.]+) bits/dim test, guided samples ([\d.]+) classifier accuracy",
     [Src(IMG, ("patch", "scores", "test_bpd")), Src(IMG, ("patch", "scores", "sampling", "2.0", "class_accuracy"))]),
    (README, r"relative vs absolute\s+positions ([\d.]+) vs ([\d.]+) val nats/event",
     [Src("benchmarks/music_ablation.json", ("bach", "arms", "relative", "val", "nll")),
      Src("benchmarks/music_ablation.json", ("bach", "arms", "absolute", "val", "nll"))]),
    (README, r"guidance 1 / 3: digits ([\d.]+) / ([\d.]+), shapes ([\d.]+) / ([\d.]+)",
     [Src(T2I, (data, "faithfulness", f"test_guidance_{g}")) for data in ("captioned_digits", "captioned_shapes")
      for g in (1, 3)]),
    # --- the Python API ---
    (README, r'`zoo.load\("gpt-pydoc"\)` takes \*\*([\d.]+)×\*\* the time of `import torch` alone',
     [Src("benchmarks/load_time.json", ("rows", {"command": "zoo.load('gpt-pydoc')"}, "ratio_median"))]),
    # --- docs ---
    ("docs/streaming.md", r"streaming (\d+) GB\s+of text grows resident memory by far less than (\d+) MB",
     [Src(STREAM, r"\| text generated \| ([\d.]+) GB"), Src(STREAM, r"\*\*RSS growth\*\* \(goal < (\d+) MB\)")]),
]

# Figures with a source that is not a committed file: re-measured by the test named.
REMEASURED = {"unigram baseline 3.24": "test_gpt_unigram_baseline_is_remeasured"}
# Numbers in the covered table cells that are settings or the paper's, not measurements.
NOT_FIGURES = [r"GPT-2-124M", r"batch \d+:", r"\(1e-5\)",
               r"guidance \d", r"[\d,]+ steps", r"paper: [\d.]+", r"\d+ tokens", r"batch 1 / \d+", r"T=\d+( / \d+)?"]


def text(path: str) -> str:
    return (ROOT / path).read_text()


@cache
def load_json(path: str) -> Any:
    return json.loads(text(path))


def lookup(data: Any, key: tuple) -> Any:
    for step in key:
        if isinstance(step, dict):
            found = [x for x in data if all(x.get(k) == v for k, v in step.items())]
            assert len(found) == 1, f"{step} selects {len(found)} items"
            data = found[0]
        else:
            data = data[step]
    return data


def source_values(src: Src) -> list[Any]:
    keys = src.key if src.agg else [src.key]
    if src.file.endswith(".json"):
        return [lookup(load_json(src.file), k) for k in keys]
    out = []
    for k in keys:
        found = re.findall(k, text(src.file), re.M)
        assert len(found) == 1, f"{src.file}: {k!r} matches {len(found)} times"
        out.append(found[0])
    return out


def normalise(s: str) -> str:
    return s.replace("−", "-").replace(",", "").replace("*", "").strip()


def printed_as(value: Any, printed: str, scale: float) -> str:
    """`value` as `printed` would show it: same digits after the point, rounded half up."""
    if isinstance(value, str):
        try:
            value = float(normalise(value).removesuffix("%").removesuffix("x"))
        except ValueError:
            return normalise(value)
    digits = len(printed.split(".")[1]) if "." in printed else 0
    exact = Decimal(repr(float(value))) * Decimal(repr(scale))
    return f"{exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP):f}"


def resolve(src: Src, printed: str) -> str:
    values = source_values(src)
    if src.file.endswith(".json") and isinstance(values[0], str) and src.key[-1] == "reason":
        return reason_range(values[0], printed)
    shown = [printed_as(v, printed, src.scale) for v in values]
    if src.agg:
        return {"min": min, "max": max}[src.agg](shown, key=float)
    return shown[0]


def reason_range(reason: str, printed: str) -> str:
    """The peers' MFU range a suite goal's reason states ('the peers reach 59%-72%')."""
    lo, hi = re.search(r"the peers reach (\d+)%-(\d+)%", reason).groups()
    return lo if printed == lo else hi


def phrase(pattern: str) -> str:
    """A space in a phrase matches any run of whitespace: re-wrapping a paragraph moves its line breaks."""
    return pattern.replace(" ", r"\s+")


def matches() -> list[tuple[str, re.Match, list[Src]]]:
    out = []
    for doc, pattern, sources in FIGURES:
        found = list(re.finditer(phrase(pattern), text(doc), re.M))
        assert len(found) == 1, f"{doc}: {pattern!r} matches {len(found)} times (reworded? update FIGURES)"
        assert len(sources) == len(found[0].groups()), pattern
        out.append((doc, found[0], sources))
    return out


@pytest.mark.parametrize("i", range(len(FIGURES)), ids=[f"{d}:{p[:40]}" for d, p, _ in FIGURES])
def test_figure_equals_its_source(i):
    doc, pattern, sources = FIGURES[i]
    m = re.search(phrase(pattern), text(doc), re.M)
    assert m, f"{doc} no longer has {pattern!r}"
    for printed, src in zip(m.groups(), sources, strict=True):
        printed = normalise(printed)
        want = resolve(src, printed)
        assert printed == want, f"{doc} prints {printed} where {src.file} {src.key} gives {want}"


def table_cells(doc_text: str, start: str, end: str | None, columns: list[int]) -> list[tuple[int, int]]:
    """(start, end) offsets in the README of the given columns of a Markdown table's body rows."""
    lo = doc_text.index(start)
    hi = doc_text.index(end, lo + len(start)) if end else len(doc_text)
    spans = []
    for line in re.finditer(r"^\|(?!\s*-).*\|$", doc_text[lo:hi], re.M):
        bars = [lo + line.start() + j for j, c in enumerate(line.group()) if c == "|"]
        spans += [(bars[c], bars[c + 1]) for c in columns if c + 1 < len(bars)]
    return spans[len(columns):]  # the header row's cells are no figures


def test_every_figure_in_the_tables_is_mapped():
    """A figure in the benchmark table or the zoo table's measured/checkpoint columns without a FIGURES entry
    fails here: add its source before adding it to the README."""
    readme = text(README)
    covered = [m.span(g) for doc, m, _ in matches() if doc == README for g in range(1, len(m.groups()) + 1)]
    covered += [(m.start(), m.end()) for phrase in REMEASURED for m in re.finditer(re.escape(phrase), readme)]
    covered += [(m.start(), m.end()) for p in NOT_FIGURES for m in re.finditer(p, readme)]
    bench = table_cells(readme, "<!-- bench-table -->", "<!-- bench-table -->", [0, 1])
    zoo = table_cells(readme, "| member | paper |", "\n\n", [3, 4])
    assert len(bench) >= 20 and len(zoo) >= 8
    unmapped = []
    for lo, hi in bench + zoo:
        for num in re.finditer(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w.])", readme[lo:hi]):
            a, b = lo + num.start(), lo + num.end()
            if not any(c0 <= a and b <= c1 for c0, c1 in covered):
                unmapped.append(readme[max(lo, a - 30):b + 10].replace("\n", " "))
    assert not unmapped, f"README figures with no source in FIGURES: {unmapped}"


def test_every_cited_benchmark_file_exists_and_names_its_command():
    readme = text(README)
    cited = set(re.findall(r"benchmarks/[\w./-]+\.md", readme))
    assert "benchmarks/suite_cpu_quick.md" in cited
    for path in sorted(cited):
        assert (ROOT / path).is_file(), f"README cites {path}, which does not exist"
    for src in {s.file for _, _, sources in FIGURES for s in sources}:
        assert (ROOT / src).is_file(), src
    suite = load_json(SUITE)
    assert suite["command"] == "zoo-bench --quick" and f"Command: `{suite['command']}`." in text(
        SUITE.replace(".json", ".md"))
    assert "Latest `zoo-bench --quick`" in readme


def test_gpt_unigram_baseline_is_remeasured():
    """`unigram baseline 3.24` (zoo table) is no file's figure: the end-of-training summary prints it. Re-measured
    here on the shipped gpt-pydoc's data settings (block 128, every validation window: data.max_val_windows=null)."""
    from zoo.data.text import PydocDataModule

    assert "unigram baseline 3.24" in text(README)
    dm = PydocDataModule(block_size=128, batch_size=32, codec="char", val_fraction=0.1, seed=0, max_val_windows=None)
    dm.setup("fit")
    assert f"{dm.unigram_nll():.2f}" == "3.24"
