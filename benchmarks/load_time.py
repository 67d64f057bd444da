"""Start-up cost of inference: `zoo.load` of a shipped checkpoint and `zoo-sample`, against `import torch` alone.

    PYTHONPATH=. python benchmarks/load_time.py [--rounds 9] [--threads 1]

Issue 24. Goals: `python -c "import zoo; zoo.load(NAME)"` takes <= 1.3x the time of `python -c "import torch"`,
and `zoo-sample checkpoint=gpt-pydoc max_new_tokens=20` <= 2x. Every measurement is a fresh process (the cost a
user pays, imports included), started from an empty temporary folder with HF_HUB_OFFLINE=1. One untimed
warm-up round first (the page cache), then `--rounds` rounds; each round runs every command once, the order
reversed every other round, so that all see the same machine load. A ratio is taken within a round (command /
`import torch` of the same round) and the median over rounds is reported with its min-max spread; absolute
seconds (medians) are context. Wall time is measured around the process, from start to exit (the goals' measure);
the CPU-time ratio (user + system seconds of the process, from its rusage) is given beside it, being less
swayed by other jobs on a shared machine. Peak memory is each process's own peak RSS (`ru_maxrss` of its
rusage, read with `os.wait4`: what `resource.getrusage(RUSAGE_CHILDREN)` reports, for that child alone).
This script imports no torch before measuring: a child's peak RSS counts the parent's memory at the fork.

Three more (untimed) runs of each command do the same work in a probe (`PROBE`) that splits its time
in-process (import torch; the zoo imports; the work) and records which of Lightning, torchmetrics,
torchvision, zoo.training, Hydra and OmegaConf it imported. Every process runs with
OMP_NUM_THREADS=`--threads` (default 1, the benchmarks' method, zoo/bench/common.py: on a shared machine
more threads make timings swing; here, with two threads, copying 2 MB of float16 weights into float32 took
0.3 s instead of 10 ms while another job held a core). Writes benchmarks/load_time.md and .json (options that
differ from the defaults are added to the name).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD_GOAL, SAMPLE_GOAL = 1.3, 2.0
MEMBERS = ["gpt-pydoc", "image-gpt-digits", "music-transformer-bach", "text2image-digits"]
SAMPLE_ARGS = ["checkpoint=gpt-pydoc", "max_new_tokens=20"]
WATCHED = ["lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics", "torchvision", "zoo.training",
           "hydra", "omegaconf"]
SPLIT = ["import torch", "zoo imports (zoo.hub; zoo-sample: also Hydra, OmegaConf, zoo.cli)",
         "the work (zoo.load; zoo-sample: also composing the config and 20 tokens)"]

# `python -c PROBE WHAT`: WHAT is a shipped name (zoo.load) or "zoo-sample"; prints, as its last line, the
# seconds of each SPLIT part and the WATCHED packages imported.
PROBE = f"""
import sys, time
marks = [time.perf_counter()]
import torch
marks.append(time.perf_counter())
what = sys.argv[1]
if what == "zoo-sample":
    from zoo.sample import main
    marks.append(time.perf_counter())
    sys.argv = ["zoo-sample", *{SAMPLE_ARGS!r}]
    main()
else:
    import zoo.hub
    marks.append(time.perf_counter())
    zoo.hub.load(what)
marks.append(time.perf_counter())
import json
watched = sorted({{w for w in {WATCHED!r} for m in sys.modules if m == w or m.startswith(w + ".")}})
print("\\n" + json.dumps({{"split": [b - a for a, b in zip(marks, marks[1:])], "imported": watched}}))
"""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, as zoo.bench.common names it (not imported here: it imports torch)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def zoo_sample() -> list[str]:
    """The zoo-sample console script beside this Python (what `pip install` puts on PATH), else `-m zoo.sample`."""
    script = Path(sys.executable).with_name("zoo-sample")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "zoo.sample"]


def commands() -> dict[str, tuple[list[str], str | None]]:
    """label -> (the command, what PROBE does for it: None for `import torch`)."""
    out: dict[str, tuple[list[str], str | None]] = {"import torch": ([sys.executable, "-c", "import torch"], None)}
    for name in MEMBERS:
        out[f"zoo.load('{name}')"] = ([sys.executable, "-c", f"import zoo; zoo.load({name!r})"], name)
    out["zoo-sample " + " ".join(SAMPLE_ARGS)] = ([*zoo_sample(), *SAMPLE_ARGS], "zoo-sample")
    return out


def run_once(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds (user + system), peak RSS in MiB) of one fresh process; raises if it fails."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{argv} exited with {proc.returncode}: {err.read().decode()[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB


def probe(what: str, cwd: str, env: dict[str, str]) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, what], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"probe {what} exited with {r.returncode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(rounds: int, threads: int) -> dict:
    cmds = commands()
    names = list(cmds)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as cwd:
        probes = {n: [probe(what, cwd, env) for _ in range(3)] for n, (_, what) in cmds.items() if what}
        for n in names:  # warm-up: page cache, .pyc files
            run_once(cmds[n][0], cwd, env)
        for r in range(rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                s, c, m = run_once(cmds[n][0], cwd, env)
                seconds[n].append(s)
                cpu[n].append(c)
                rss[n].append(m)
    rows = []
    for n in names:
        ratios = [a / b for a, b in zip(seconds[n], seconds["import torch"])]
        cpu_ratios = [a / b for a, b in zip(cpu[n], cpu["import torch"])]
        goal = None if n == "import torch" else SAMPLE_GOAL if n.startswith("zoo-sample") else LOAD_GOAL
        runs = probes.get(n, [])
        rows.append({"command": n, "seconds_median": statistics.median(seconds[n]), "seconds": seconds[n],
                     "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "ratios": ratios, "cpu_seconds": cpu[n], "cpu_ratio_median": statistics.median(cpu_ratios),
                     "cpu_ratios": cpu_ratios, "goal": goal,
                     "met": None if goal is None else statistics.median(ratios) <= goal,
                     "peak_rss_mib_median": statistics.median(rss[n]), "peak_rss_mib": rss[n],
                     "imported": sorted({p for run in runs for p in run["imported"]}),
                     "split_seconds": [statistics.median(x) for x in zip(*(run["split"] for run in runs))]})
    return {"rows": rows, "rounds": rounds, "threads": threads, "split_parts": SPLIT}


def _why(row: dict) -> str:
    torch_s, zoo_s, work_s = row["split_seconds"]
    room = (row["goal"] - 1) * torch_s
    return (f"beyond `import torch`, {torch_s:.2f} s in that process, the goal leaves {room:.2f} s for the rest; "
            f"the zoo imports took {zoo_s:.2f} s and the work {work_s:.2f} s, plus the process's own start and exit")


def markdown(result: dict, command: str) -> str:
    m = result["machine"]
    lines = [
        "# Start-up: `zoo.load` and `zoo-sample` against `import torch`", "",
        f"Command: `{command}` (issue 24; method in the script's docstring).", "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, shared with other jobs (1-minute load average {m['load_start']} at "
        f"the start, {m['load_end']} at the end); Python {m['python']}, torch {m['torch']}. {result['rounds']} "
        f"rounds, each command a fresh process, OMP_NUM_THREADS={result['threads']}.", "",
        "| command | seconds (median) | ratio to `import torch` (median, min-max) | goal | CPU-time ratio (median) "
        "| peak RSS MiB (median) | imports Lightning, torchmetrics, torchvision, zoo.training, Hydra or OmegaConf |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        goal = "" if row["goal"] is None else f"<= {row['goal']}x: {'met' if row['met'] else 'MISSED'}"
        lines.append(f"| `{row['command']}` | {row['seconds_median']:.2f} | {row['ratio_median']:.2f}x "
                     f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | {goal} | {row['cpu_ratio_median']:.2f}x "
                     f"| {row['peak_rss_mib_median']:.0f} "
                     f"| {', '.join(row['imported']) or ('none' if row['goal'] else '')} |")
    parts = result["split_parts"]
    lines += ["", "Where the time goes, in-process (median of 3 probe runs, seconds; the process start and exit "
              "are not in it): " + "; ".join(f"({i + 1}) {p}" for i, p in enumerate(parts)) + ". The in-process "
              "ratio, all parts over (1), is the steadier reading on a busy machine: its parts share one process.", "",
              "| command | " + " | ".join(f"({i + 1})" for i in range(len(parts))) + " | in-process ratio |",
              "| --- |" + " --- |" * (len(parts) + 1)]
    lines += [f"| `{r['command']}` | " + " | ".join(f"{x:.2f}" for x in r["split_seconds"])
              + f" | {sum(r['split_seconds']) / r['split_seconds'][0]:.2f}x |"
              for r in result["rows"] if r["split_seconds"]]
    busy = max(m["load_start"] or 0, m["load_end"] or 0)
    if busy > m["cpus"]:
        lines += ["", f"The machine was busy (load average up to {busy} on {m['cpus']} CPUs): the per-round ratios "
                  "spread widely (min-max above), and a median below 1x is noise, not a load faster than torch."]
    missed = [r for r in result["rows"] if r["met"] is False]
    verdict = "every goal met." if not missed else "MISSED: " + "; ".join(
        f"`{r['command']}` at {r['ratio_median']:.2f}x, {r['ratio_median'] / r['goal'] - 1:.0%} over its "
        f"{r['goal']}x goal (why, from the split: {_why(r)})" for r in missed) + "."
    lines += ["", f"Verdict: {verdict}"]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every measured process")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder for the .md and .json")
    return ap


def options(args: argparse.Namespace) -> dict:
    from zoo.bench.common import changed_options  # imports torch: called only after measuring

    return changed_options(parser(), args, ignore=["out"])


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix): load_time, then each option that differs from its default."""
    from zoo.bench.common import output_stem

    return output_stem("load_time", options(args))


def main() -> None:
    args = parser().parse_args()
    machine = {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "torch": version("torch"), "load_start": load_average()}
    result = measure(args.rounds, args.threads)
    result["machine"] = {**machine, "load_end": load_average()}
    command = "PYTHONPATH=. python benchmarks/load_time.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in options(args).items())
    out = args.out / stem(args)
    Path(f"{out}.json").write_text(json.dumps({"command": command, **result}, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(result, command))
    print(Path(f"{out}.md").read_text())


if __name__ == "__main__":
    main()
