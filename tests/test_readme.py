"""Every command in README.md is exercised, so the README and the code cannot drift apart.

The test extracts each command of the README's ```bash blocks (comments dropped, `&&` chains split)
and looks it up in COMMANDS, which says how it is exercised:

  produce  a zoo-train / zoo-export step of the quick path: run once, in README order, in a shared
           workspace (its cwd), with TINY overrides appended; later commands use what it wrote
  train    zoo-train run in-process in a fresh folder with TINY overrides appended
  sample   zoo-sample run in-process (shipped names anywhere; runs/ and exports/ in the workspace),
           max_new_tokens capped; what it prints and writes is checked
  compose  cannot run here (several processes, a GPU, a cluster): the launcher's arguments parse and
           the zoo.train overrides pass zoo-train's own key check and compose; the reason names where
           it really runs, if anywhere
  setup    `pip install`: the extra it names exists in pyproject.toml
  tool     runs elsewhere (a server, an upload, a prepared folder): a zoo-* command composes with its
           overrides (as the docs' commands do); another program (wandb, pytest) is installed
  bench    `zoo-bench`: minutes of benchmarks, not run here; its arguments parse into the suite they name
           (tests/test_bench.py runs the suite with --tiny)

A README command missing from COMMANDS fails `test_every_readme_command_is_known`, and so does an
entry of COMMANDS that the README no longer has. Python blocks are executed as written, in the
workspace, with the placeholder paths in PLACEHOLDERS pointed at generated fixtures.

docs/*.md: every command of their shell blocks is checked by what it runs (`check_doc_command`, one rule
per program, no hand list): zoo-sample of a shipped checkpoint is run; zoo-train / torchrun / srun /
sbatch overrides, and zoo-sample / zoo-export / zoo-serve / zoo-prepare overrides compose in-process
through Hydra after their console script's key check; zoo-bench arguments parse; pip extras exist; curl
requests name a route of zoo-serve with a JSON body; other tools are installed. A command of a program
no rule knows fails `test_docs_command`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT, TINY, compose_train
from omegaconf import OmegaConf

import zoo

README = ROOT / "README.md"

# ---- how each README command is exercised ---------------------------------------------------------
COMMANDS: dict[str, tuple[str, str]] = {
    # set-up
    "python -m pip install -e .": ("setup", ""),
    'python -m pip install -e ".[test]"': ("setup", "test"),
    'python -m pip install -e ".[slurm]"': ("setup", "slurm"),
    'python -m pip install -e ".[image,music]"': ("setup", "image,music"),
    'python -m pip install -e ".[serve]"': ("setup", "serve"),
    # fine-tuning (issue 15)
    "zoo-train init_from=gpt-pydoc data=text_files data.path=corpus/ module.lr=5e-4": (
        "compose", "fine-tunes the shipped model: tests/test_finetune.py::test_init_from_a_registry_name_takes_its_"
                   "config_and_codec"),
    "zoo-train init_from=gpt-pydoc data=text_files data.path=corpus/ lora.rank=8 module.lr=3e-3": (
        "compose", "tests/test_lora.py::test_a_lora_run_resumes_on_its_uninterrupted_loss_curve_and_loads_merged"),
    "zoo-train init_from=music-transformer-bach data=midi_folder data.path=midi/ lora.rank=8 module.lr=3e-3": (
        "compose", "minutes of CPU: benchmarks/finetune.py runs it on Monteverdi and Palestrina MIDI"),
    # multitrack MIDI (issue 16)
    "zoo-train model=music_transformer data=midi_folder data.path=midi/ data/codec=multitrack "
    "data.codec.tokenization=REMI": (
        "compose", "needs a MIDI folder: tests/test_multitrack.py::test_zoo_train_multitrack_then_load_sample_and_"
                   "the_sample_command trains it on a generated band"),
    "zoo-train experiment=gpt2_finetune data.path=corpus/": (
        "compose", "downloads GPT-2: tests/test_train.py runs the experiment from a local GPT-2 folder"),
    "zoo-export checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt out=exports/my-gpt push_to=ORG/my-gpt "
    "+card.license=mit": ("tool", "uploads to the Hub: tests/test_hf_hub.py runs it up to the upload call"),
    # long sequences and big corpora (issue 17)
    """zoo-prepare inputs='[books/,"notes/**/*.md"]' out=data/books codec=bpe vocab_size=8192""": (
        "tool", "tests/test_streaming.py prepares folders and globs with the char and BPE codecs"),
    "zoo-train data=streaming data.path=data/books": (
        "tool", "needs a prepared folder: tests/test_streaming.py trains and resumes from one"),
    "zoo-train model.n_kv_head=1 model.window=128 model.position=rotary": ("train", ""),
    "zoo-train model.position=none model.bias=alibi": ("train", ""),
    "zoo-serve models='[gpt-pydoc,image-gpt-digits,music-transformer-bach,text2image-digits]'": (
        "tool", "a long-running server: tests/test_serve.py and tests/test_serve_browser.py run it live"),
    "python -m pytest": ("tool", "the test suite itself"),
    # quick path 1: pretrained, by name
    'zoo-sample checkpoint=gpt-pydoc prompt="The assert statement" top_p=0.9': ("sample", ""),
    "zoo-sample checkpoint=image-gpt-digits labels='[3,7]' guidance=2 num_samples=8 out=samples/": ("sample", ""),
    'zoo-sample checkpoint=text2image-digits prompt="a 4 on the left and a 1 on the right" guidance=3 num_samples=8 '
    'out=samples/': ("sample", ""),
    "zoo-sample checkpoint=music-transformer-bach max_new_tokens=512 out=samples/": ("sample", ""),
    "zoo-sample checkpoint=music-transformer-styles style=irish guidance=4 num_samples=2 max_new_tokens=512 "
    "out=samples/": ("sample", ""),
    # quick path 2: train each member, then sample it
    "zoo-train": ("produce", ""),
    'zoo-sample checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt prompt="The assert statement" '
    'top_p=0.9': ("sample", ""),
    "zoo-train experiment=image_gpt_digits": ("produce", ""),
    "zoo-sample checkpoint=runs/image_gpt_digits/checkpoints/last.ckpt labels='[3,7]' guidance=2 num_samples=8 "
    "out=samples/": ("sample", ""),
    "zoo-train experiment=music_transformer_bach": ("produce", ""),
    "zoo-sample checkpoint=runs/music_transformer_bach/checkpoints/last.ckpt num_samples=2 max_new_tokens=1024 "
    "out=samples/": ("sample", ""),
    "zoo-train experiment=music_transformer_styles": (
        "compose", "converts six music21 collections first (~25 min): tests/test_music_styles.py::test_train_then_"
                   "sample_by_style trains and samples it on a few pieces"),
    "zoo-sample checkpoint=runs/music_transformer_styles/checkpoints/last.ckpt style=all guidance=4 out=samples/": (
        "tool", "needs that run: tests/test_music_styles.py::test_train_then_sample_by_style samples one"),
    "zoo-train experiment=text2image_digits": ("produce", ""),
    'zoo-sample checkpoint=runs/text2image_digits/checkpoints/last.ckpt prompt="a 4 on the left and a 1 on the right" '
    'guidance=3 num_samples=8 out=samples/': ("sample", ""),
    # quick path 3: export
    "zoo-export checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt out=exports/my-gpt": ("produce", ""),
    'zoo-sample checkpoint=exports/my-gpt prompt="The with statement" num_samples=2 seed=0': ("sample", ""),
    # sampling options
    """zoo-sample checkpoint=gpt-pydoc prompts='["def ", "The with statement"]' num_samples=2 seed=0 temperature=0.8 """
    """top_k=50 min_p=0.05 repetition_penalty=1.2 stop='["\\n\\n"]'""": ("sample", ""),
    "zoo-sample checkpoint=image-gpt-digits primer=digit.png rows=4 labels=3 num_samples=4 "
    "out=samples/": ("sample", ""),
    "zoo-sample checkpoint=music-transformer-bach primer=song.mid max_new_tokens=256 out=samples/": ("sample", ""),
    # configuration cookbook
    "zoo-train --cfg job": ("compose", "printing the config: tests/test_train.py::test_cli_print_config"),
    "zoo-train model.n_layer=2 data=text_files data.path=corpus/ trainer.max_steps=200": ("train", ""),
    "zoo-train ckpt_path=null": ("train", ""),
    "zoo-train precision=bf16-mixed": ("train", ""),
    "zoo-train trainer=gpu precision=bf16-mixed compile=true": (
        "compose", "a CUDA GPU; compile on CPU: tests/test_scale.py::test_compile_in_place_keeps_checkpoint_keys"),
    "zoo-train strategy=ddp trainer.devices=2": (
        "compose", "2 processes: tests/test_scale.py::test_hydra_multirun_with_ddp_writes_each_job_to_its_own_folder"),
    "zoo-train strategy=fsdp trainer.devices=2": (
        "compose", "two processes: tests/test_scale.py::test_music_transformer_under_fsdp_matches_one_process"),
    "zoo-train strategy=fsdp trainer.devices=2 module.activation_checkpointing=true": (
        "compose", "two processes: tests/test_scale.py::test_activation_checkpointing_and_fsdp_keep_loss_gradients_"
                   "and_keys"),
    "zoo-train -m model.n_layer=2,4 module.lr=1e-3,3e-4": (
        "compose", "four runs: tests/test_train.py::test_cli_multirun_writes_each_job_to_its_own_folder"),
    "zoo-train logger=wandb": (
        "compose", "W&B offline run: tests/test_train.py::test_wandb_without_login_runs_offline_and_writes_the_run"),
    "zoo-train logger=wandb logger.mode=offline logger.project=zoo-sweeps": (
        "compose", "W&B offline run: tests/test_train.py::test_wandb_without_login_runs_offline_and_writes_the_run"),
    "wandb sync runs/gpt_pydoc/wandb/offline-run-*": ("tool", "wandb: uploading needs an account and the network"),
    "zoo-train logger=tensorboard": ("train", ""),
    "zoo-train logger=wandb logger.log_model=true": ("compose", "uploads artifacts: needs a W&B account"),
    # multi-node
    "torchrun --standalone --nproc-per-node 2 -m zoo.train strategy=ddp trainer.devices=2": (
        "compose", "tests/test_scale.py::test_torchrun_launch_of_text2image_under_ddp_matches_one_process"),
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m zoo.train "
    "strategy=fsdp trainer.num_nodes=2 trainer.devices=8": ("compose", "two nodes of 8 GPUs"),
    "srun python -m zoo.train strategy=fsdp trainer.num_nodes=2 trainer.devices=8": (
        "compose", "a SLURM allocation; tests/test_scale.py::test_sbatch_script_is_valid_bash_with_one_task_per_gpu"),
    "zoo-train -m hydra/launcher=submitit_slurm hydra.launcher.nodes=2 hydra.launcher.gpus_per_node=8 "
    "trainer.num_nodes=2 trainer.devices=8 strategy=fsdp": (
        "compose", "a SLURM cluster (and the [slurm] extra); "
                   "tests/test_scale.py::test_slurm_launcher_config_composes_from_the_trainer_settings"),
    # benchmarks
    "zoo-bench --quick": ("bench", "minutes of benchmarks: tests/test_bench.py runs the suite with --tiny"),
}

# Placeholder paths of the README's python blocks -> what the test points them at.
PLACEHOLDERS = {"path/to/hf-gpt2-folder": "hf_gpt2", "path/to/zoo": "repo"}

# Small enough to train a few steps in seconds; keys a model does not have are left out.
TINY_TRAIN = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2", "checkpoint.every_n_steps=2",
              "data.max_files=6", "data.num_eval=8"]
SAMPLE_CAP = 24  # max_new_tokens for every zoo-sample command whose member takes it (images are always whole)


def _importable(module: str) -> bool:
    """find_spec without its ModuleNotFoundError when a parent package (here `hydra_plugins`) is absent."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- extracting the README's commands -------------------------------------------------------------
def fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _strip_comment(line: str) -> str:
    """The line up to a `#` that starts a shell comment (outside quotes, after whitespace)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _split_and(line: str) -> list[str]:
    parts, quote, start = [], None, 0
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif line.startswith("&&", i):
            parts.append(line[start:i])
            start = i + 2
    return [p.strip() for p in [*parts, line[start:]] if p.strip()]


# the programs a line of an untagged block starts with (after VAR=value) for it to be a command; any zoo-*
# word counts too, so that a new console script's command is found (and fails until a rule covers it)
PROGRAMS = ("zoo-train", "zoo-sample", "zoo-export", "zoo-serve", "zoo-prepare", "zoo-bench", "torchrun", "srun",
            "sbatch", "python", "pip", "curl", "hf", "wandb", "ruff", "sha256sum", "tensorboard")


def _program(command: str) -> str:
    return next((t for t in command.split() if not re.fullmatch(r"[A-Z_]+=\S*", t)), "")


def readme_commands(text: str | None = None) -> list[str]:
    """Every shell command of a markdown text, in order (continuations joined, `&&` split): every line of a
    bash block, and the lines of an untagged block that start with a program of PROGRAMS."""
    text = README.read_text() if text is None else text
    commands = []
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):  # every fence, in pairs
        for line in block.replace("\\\n", " ").splitlines() if lang in ("bash", "") else []:
            line = " ".join(_strip_comment(line).split())
            if line and (lang == "bash" or _program(line) in PROGRAMS or _program(line).startswith("zoo-")):
                commands += _split_and(line)
    return commands


def test_extraction_handles_comments_chains_and_continuations():
    text = ("```bash\n# a comment\nzoo-train a=1 b='x # y'   # trailing\npip install -e . && zoo-train\n"
            "zoo-sample p=1 \\\n    q=2\n```\n```python\nnot = 'bash'\n```\n"
            "```\nOUT/train/   a layout line\nzoo-serve port=1   # untagged block\nOMP_NUM_THREADS=1 zoo-train\n"
            "zoo-new x=1\n```\n")
    assert readme_commands(text) == ["zoo-train a=1 b='x # y'", "pip install -e .", "zoo-train", "zoo-sample p=1 q=2",
                                     "zoo-serve port=1", "OMP_NUM_THREADS=1 zoo-train", "zoo-new x=1"]


def test_every_readme_command_is_known():
    found = readme_commands()
    unknown = [c for c in found if c not in COMMANDS]
    assert not unknown, ("README.md has commands tests/test_readme.py does not exercise; add each to COMMANDS "
                         f"with how to run or check it: {unknown}")
    stale = [c for c in COMMANDS if c not in found]
    assert not stale, f"COMMANDS lists commands README.md no longer has; remove them: {stale}"
    assert found[:4] == ["python -m pip install -e .", "zoo-train", 'python -m pip install -e ".[test]"',
                         "python -m pytest"], "the two set-up commands come first, unchanged"


# ---- running entry points in-process --------------------------------------------------------------
@dataclass
class Result:
    code: int | None
    out: str
    err: str = ""
    files: list[Path] = field(default_factory=list)


def run_entry_point(module_name: str, args: list[str], cwd: Path) -> Result:
    """`main()` of a console script with this argv, in-process, in `cwd`; stdout/stderr captured."""
    module = importlib.import_module(module_name)
    before = {p: p.stat().st_mtime_ns for p in cwd.rglob("*") if p.is_file()}
    old_argv, old_cwd = sys.argv, Path.cwd()
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [module_name, *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            module.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            err.write(str(e.code))
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    files = sorted(p for p in cwd.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns)
    return Result(code, out.getvalue(), err.getvalue(), files)


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """`args` with each key of `extra` replaced (or added); within `extra` the last value of a key wins."""
    last = {e.split("=", 1)[0]: e for e in extra}
    return [a for a in args if a.split("=", 1)[0] not in last] + list(last.values())


def tiny_train_args(args: list[str], cwd: Path) -> list[str]:
    """README overrides + TINY_TRAIN (only keys this composition has) + offline data paths."""
    cfg = compose_train([a for a in args if not a.startswith("-")])
    missing = object()
    keep = [o for o in TINY_TRAIN if OmegaConf.select(cfg, o.split("=")[0], default=missing) is not missing]
    if cfg.data.get("cache_dir", missing) is not missing:
        keep.append(f"data.cache_dir={cwd / 'data_cache'}")
    return with_overrides(args, keep)


def train(args: list[str], cwd: Path) -> Result:
    r = run_entry_point("zoo.train", tiny_train_args(args, cwd), cwd)
    assert r.code == 0, f"zoo-train {args} failed:\n{r.out[-2000:]}\n{r.err[-4000:]}"
    name = compose_train(args).name
    assert (cwd / "runs" / name / "checkpoints" / "last.ckpt").is_file(), r.files
    return r


# ---- fixtures the commands refer to ---------------------------------------------------------------
def make_inputs(cwd: Path) -> None:
    """The files the README's commands name as the user's own: corpus/, digit.png, song.mid."""
    import numpy as np
    import pretty_midi
    from PIL import Image
    from sklearn.datasets import load_digits

    (cwd / "corpus").mkdir(exist_ok=True)
    (cwd / "corpus" / "notes.txt").write_text("The quick brown fox jumps over the lazy dog. " * 300)
    digit = load_digits().images[3] * (255 / 16)
    Image.fromarray(digit.astype(np.uint8)).save(cwd / "digit.png")
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(velocity=80, pitch=60 + p, start=i * 0.5, end=i * 0.5 + 0.45)
                   for i, p in enumerate([0, 4, 7, 12, 7, 4, 0])]
    pm.instruments.append(piano)
    pm.write(str(cwd / "song.mid"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """The quick path's producers (zoo-train per member, zoo-export), run once in README order."""
    cwd = tmp_path_factory.mktemp("workspace")
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_CACHE", str(cwd / "zoo_cache"))
        mp.setenv("WANDB_DIR", str(cwd))
        for cmd in dict.fromkeys(readme_commands()):
            if COMMANDS.get(cmd, ("",))[0] != "produce":
                continue
            tokens = shlex.split(cmd)
            if tokens[0] == "zoo-train":
                results[cmd] = train(tokens[1:], cwd)
            elif tokens[0] == "zoo-export":
                results[cmd] = run_entry_point("zoo.export", tokens[1:], cwd)
            else:
                raise AssertionError(f"no producer for {cmd!r}")
    return {"cwd": cwd, "results": results}


def commands(mode: str) -> list[str]:
    return [c for c in dict.fromkeys(readme_commands()) if COMMANDS.get(c, ("",))[0] == mode]


# ---- the tests, one per command -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("cmd", commands("produce"))
def test_quick_path_step(cmd, workspace):
    r = workspace["results"][cmd]
    assert r.code == 0, f"{cmd} failed:\n{r.out[-2000:]}\n{r.err[-4000:]}"
    if cmd.startswith("zoo-export"):
        out = workspace["cwd"] / shlex.split(cmd)[-1].split("=", 1)[1]
        assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("cmd", commands("train"))
def test_train_command(cmd, tmp_path):
    make_inputs(tmp_path)
    train(shlex.split(cmd)[1:], tmp_path)


def _sample_in(cmd: str, cwd: Path) -> Result:
    args = shlex.split(cmd)[1:]
    opts = dict(a.split("=", 1) for a in args)
    path = cwd / opts["checkpoint"]  # a run's or an export's folder, else a pretrained name
    # the checkpoint's member decides whether a length applies (an image member rejects one)
    takes_length = "max_new_tokens" in zoo.load(path if path.exists() else opts["checkpoint"]).member.sampling
    capped = with_overrides(args, [f"max_new_tokens={SAMPLE_CAP}"]) if takes_length else args
    r = run_entry_point("zoo.sample", capped, cwd)
    assert r.code == 0, f"{cmd} failed:\n{r.out[-2000:]}\n{r.err[-4000:]}"
    if "out" in opts:  # media: files written under out=
        written = [p for p in r.files if p.is_relative_to(cwd / opts["out"])]
        assert written, f"{cmd} wrote nothing under {opts['out']}: {r.files}"
        suffixes = {p.suffix for p in written}
        assert suffixes & {".png", ".mid"}, suffixes
        if "primer" in opts and opts["primer"].endswith(".mid"):
            assert ".mid" in suffixes
    else:  # text: printed, starting with the prompt
        assert r.out.strip(), f"{cmd} printed nothing"
        if "prompt" in opts:
            assert r.out.startswith(opts["prompt"]) or f"prompt {opts['prompt']!r}" in r.out, r.out[:300]
    return r


@pytest.mark.parametrize("cmd", [c for c in commands("sample") if "checkpoint=runs/" not in c
                                 and "checkpoint=exports/" not in c])
def test_sample_command_with_a_shipped_checkpoint(cmd, tmp_path):
    make_inputs(tmp_path)
    _sample_in(cmd, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in commands("sample") if "checkpoint=runs/" in c
                                 or "checkpoint=exports/" in c])
def test_sample_command_after_the_quick_path(cmd, workspace):
    _sample_in(cmd, workspace["cwd"])


def launch_overrides(tokens: list[str]) -> list[str]:
    """The zoo.train overrides of a zoo-train / torchrun / srun command line; checks the launcher's own part."""
    if tokens[0] == "zoo-train":
        return [t for t in tokens[1:] if t not in ("-m", "--multirun", "--cfg", "job")]
    if tokens[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(tokens[1:])
        assert ns.module and ns.training_script == "zoo.train", tokens
        return list(ns.training_script_args)
    if tokens[0] == "srun":
        assert tokens[1:4] == ["python", "-m", "zoo.train"], tokens
        return tokens[4:]
    raise AssertionError(f"no composition check for {tokens[0]!r}")


def check_composes(cmd: str) -> None:
    """zoo-train's own checks pass (overrides, then the composed config) for every job of the command."""
    import zoo.cli
    from zoo.cli import check_overrides

    overrides = launch_overrides(shlex.split(cmd))
    message = check_overrides("train", overrides)
    assert message is None, f"{cmd}: {message}"
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_side = [o for o in overrides if o.startswith(("hydra/", "hydra."))]
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if o not in hydra_side])
    # a sweep (`a=1,2`) is one job per value; a list value (`'a=[x,y]'`) is one value
    sweeps = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
              else [o.input_line] for o in parsed]
    for job in itertools.product(*sweeps):
        cfg = compose_train([*job, *hydra_side]) if not hydra_side else _compose_with_hydra([*job, *hydra_side])
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        preflight = getattr(zoo.cli, "check_train_config", None)  # zoo-train's pre-flight check, where it exists
        if preflight is not None:
            preflight(resolved)


def _compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra")  # resolving the launcher needs a running Hydra job; the job's config is what matters
    return cfg


@pytest.mark.parametrize("cmd", commands("compose"))
def test_compose_only_command(cmd):
    assert COMMANDS[cmd][1], f"say why {cmd!r} is composition-only and where it runs"
    if "hydra/launcher=submitit" in cmd and not _importable("hydra_plugins.hydra_submitit_launcher"):
        pytest.skip("needs the [slurm] extra (hydra-submitit-launcher)")
    check_composes(cmd)


class _Parsed(Exception):
    pass


def check_bench(cmd: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """`zoo-bench ...` goes through its console script's argument parsing up to the suite, which is not run."""
    import zoo.bench

    assert pyproject()["project"]["scripts"]["zoo-bench"] == "zoo.bench:main"

    def stop(**kwargs):
        raise _Parsed(kwargs)

    monkeypatch.setattr(zoo.bench, "run_suite", stop)
    with pytest.raises(_Parsed) as parsed:
        zoo.bench.main(shlex.split(cmd)[1:])
    return parsed.value.args[0]


@pytest.mark.parametrize("cmd", commands("bench"))
def test_bench_command_parses(cmd, monkeypatch):
    suite = check_bench(cmd, monkeypatch)
    assert suite["mode"] == ("quick" if "--quick" in cmd.split() else "full"), suite


@pytest.mark.parametrize("cmd", commands("setup"))
def test_setup_command_names_an_existing_extra(cmd):
    project = pyproject()["project"]
    for extra in filter(None, COMMANDS[cmd][1].split(",")):
        assert extra in project["optional-dependencies"], f"{cmd}: no [{extra}] extra in pyproject.toml"
    assert {"zoo-train", "zoo-sample", "zoo-export"} <= set(project["scripts"])


def test_extras_are_installed_before_use():
    """A command that needs an extra (tests/test_install.py proves which) comes after a set-up command that
    installs it: the README works when followed top to bottom on a fresh machine (issue 13)."""
    from test_install import NEEDS_EXTRA

    installed: set[str] = set()
    for cmd in readme_commands():
        if COMMANDS.get(cmd, ("",))[0] == "setup":
            installed |= set(filter(None, COMMANDS[cmd][1].split(",")))
        for override, extra in NEEDS_EXTRA.items():
            if override in cmd.split():
                assert extra in installed, f"README: `{cmd}` needs the [{extra}] extra, not installed before it"


@pytest.mark.parametrize("cmd", commands("tool"))
def test_tool_command_is_installed(cmd, tmp_path, monkeypatch):
    """Another program is installed; a zoo-* one that runs elsewhere composes with its overrides."""
    tool = shlex.split(cmd)[0]
    if tool == "python":
        tool = shlex.split(cmd)[2]  # python -m pytest
        assert importlib.util.find_spec(tool) is not None
    elif tool.startswith("zoo-"):
        assert check_doc_command(cmd, tmp_path, monkeypatch) == "composed", cmd
    else:
        assert shutil.which(tool) or importlib.util.find_spec(tool), f"{tool} is not installed"


# ---- docs/*.md commands: one rule per program --------------------------------------------------------
DOCS = sorted((ROOT / "docs").glob("*.md"))
ENTRY_CONFIGS = {"zoo-sample": "sample", "zoo-export": "export", "zoo-serve": "serve", "zoo-prepare": "prepare"}


def docs_commands() -> list[tuple[str, str]]:
    return [(p.name, cmd) for p in DOCS for cmd in dict.fromkeys(readme_commands(p.read_text()))]


def check_entry_composes(program: str, args: list[str]) -> None:
    """The console script's key check passes and Hydra composes its config with these overrides, in-process."""
    from hydra import compose, initialize_config_dir

    from zoo.cli import check_overrides

    config = ENTRY_CONFIGS[program]
    message = check_overrides(config, args)
    assert message is None, f"{program}: {message}"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=config, overrides=args)
    OmegaConf.to_container(cfg, resolve=True)


def check_curl(tokens: list[str]) -> str:
    """A request to zoo-serve: a route the app declares, a JSON body; returns the route."""
    url = next(t for t in tokens if t.startswith("http"))
    route = re.sub(r"^https?://[^/]+", "", url)
    app_source = "".join(p.read_text() for p in (ROOT / "zoo" / "serve").glob("*.py"))  # app.py, openai_api.py
    assert route in ("/openapi.json", "/docs") or f'"{route}"' in app_source, f"zoo-serve has no route {route}"
    if "-d" in tokens:
        import json

        body = json.loads(tokens[tokens.index("-d") + 1])
        assert isinstance(body, dict) and "model" in body, body
    return route


def check_doc_command(cmd: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, examples: set[str] = frozenset()) -> str:
    """Check one docs command by its program; returns how ("run", "composed", ...). Unknown programs fail.
    `examples`: experiments a guide defines in its own yaml blocks (docs/adding_a_model.md's rnn_lm_pydoc)."""
    pipeline = [part.strip() for part in cmd.split(" | ")]
    tokens = [t for t in shlex.split(pipeline[0]) if t != "..."]  # `zoo-train strategy=fsdp ... ckpt_path=`
    while re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # OMP_NUM_THREADS=1 zoo-train ...
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    for part in pipeline[1:]:  # `curl ... | python -c "..."`: the snippet compiles
        inner = shlex.split(part)
        assert inner[:2] == ["python", "-c"], f"{cmd}: no rule for the pipe into {part!r}"
        compile(inner[2], cmd, "exec")
    if program == "zoo-train" and any(f"experiment={name}" in args for name in examples):
        return "example"  # the guide's own yaml defines it (test_docs_command checks that)
    if program in ("zoo-train", "torchrun", "srun"):
        if "hydra/launcher=submitit_local" in args and not _importable("hydra_plugins.hydra_submitit_launcher"):
            pytest.skip("needs the [slurm] extra (hydra-submitit-launcher)")
        check_composes(" ".join(shlex.quote(t) for t in tokens))
        return "composed"
    if program == "sbatch":
        script = next(t for t in args if t.endswith(".sbatch"))
        assert (ROOT / script).is_file(), f"{cmd}: {script} does not exist"
        check_composes(" ".join(["zoo-train", *map(shlex.quote, args[args.index(script) + 1:])]))
        return "composed"
    from zoo.hub import REGISTRY

    if program == "zoo-sample" and dict(a.split("=", 1) for a in args).get("checkpoint") in REGISTRY:  # shipped
        _sample_in(" ".join([program, *map(shlex.quote, args)]), cwd)
        return "run"
    if program in ENTRY_CONFIGS:
        check_entry_composes(program, args)
        return "composed"
    if program == "zoo-bench":
        check_bench(cmd, monkeypatch)
        return "parsed"
    if program == "pip" or tokens[:3] == ["python", "-m", "pip"]:
        extras = re.findall(r"\[([\w,-]+)\]", cmd)
        for extra in ",".join(extras).split(",") if extras else []:
            assert extra in pyproject()["project"]["optional-dependencies"], f"{cmd}: no [{extra}] extra"
        return "setup"
    if tokens[:3] == ["python", "-m", "zoo.lm_eval_model"]:  # lm-eval's own command line, `zoo` registered
        pytest.importorskip("lm_eval", reason="needs the [eval] extra")
        from lm_eval._cli import HarnessCLI

        import zoo.lm_eval_model  # noqa: F401
        assert HarnessCLI()._parser.parse_args(args[2:]).model == "zoo", f"{cmd}: --model zoo"
        return "parsed"
    if tokens[:3] == ["python", "-m", "pytest"]:
        for path in (t for t in args if t.startswith("tests/")):
            assert "<" in path or (ROOT / path).is_file(), f"{cmd}: {path} does not exist"
        return "tool"
    if program == "curl":
        check_curl(tokens)
        return "request"
    if program in ("hf", "wandb", "ruff", "sha256sum", "tensorboard"):
        assert shutil.which(program), f"{program} is not installed"
        return "tool"
    raise AssertionError(f"{cmd!r}: no test covers a docs command of {program!r}; add a rule to check_doc_command")


def test_docs_have_commands_from_every_guide():
    found = docs_commands()
    assert len(found) >= 50, len(found)
    assert {doc for doc, _ in found} >= {"adding_a_model.md", "configuration.md", "hub.md", "scaling.md",
                                         "serving.md", "streaming.md"}


def guide_experiments(text: str) -> set[str]:
    """`name:` of the experiment yaml blocks a guide writes out (`# @package _global_`)."""
    return {m for block in fenced_blocks(text, "yaml") if "@package _global_" in block
            for m in re.findall(r"^name: (\w+)", block, flags=re.M)}


@pytest.mark.parametrize(("doc", "cmd"), docs_commands())
def test_docs_command(doc, cmd, tmp_path, monkeypatch):
    make_inputs(tmp_path)
    examples = guide_experiments((ROOT / "docs" / doc).read_text())
    how = check_doc_command(cmd, tmp_path, monkeypatch, examples)
    if how == "example":
        name = re.search(r"experiment=(\w+)", cmd).group(1)
        assert not (ROOT / "conf" / "experiment" / f"{name}.yaml").exists(), f"{name} ships now: compose it"


def test_a_docs_command_of_an_unknown_program_fails(tmp_path, monkeypatch):
    with pytest.raises(AssertionError, match="no test covers a docs command of 'zoo-newtool'"):
        check_doc_command("zoo-newtool x=1", tmp_path, monkeypatch)
    with pytest.raises(AssertionError, match="unknown config key 'model.n_layers'"):
        check_doc_command("zoo-train model.n_layers=2", tmp_path, monkeypatch)
    with pytest.raises(AssertionError, match="unknown config key 'prot'"):
        check_doc_command("zoo-serve prot=8000", tmp_path, monkeypatch)


# ---- python blocks ---------------------------------------------------------------------------------
def make_hf_gpt2(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=64)).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_python_blocks_run(workspace, tmp_path, capsys):
    blocks = fenced_blocks(README.read_text(), "python")
    assert blocks, "README.md has no python block"
    targets = {"hf_gpt2": str(make_hf_gpt2(tmp_path / "hf-gpt2")), "repo": str(ROOT)}
    cwd, old = workspace["cwd"], Path.cwd()
    os.chdir(cwd)
    try:
        for i, block in enumerate(blocks):
            for placeholder, target in PLACEHOLDERS.items():
                block = block.replace(placeholder, targets[target])
            assert "path/to" not in block, f"python block {i} has a placeholder PLACEHOLDERS does not know"
            exec(compile(block, f"README.md python block {i}", "exec"), {"__name__": f"readme_block_{i}"})
    finally:
        os.chdir(old)
    printed = capsys.readouterr().out
    assert "gpt-pydoc" in printed and "The with statement" in printed
    for name in ("digits.png", "grid.png", "bach.mid"):  # written by the first block
        assert (cwd / name).stat().st_size > 0, name


# ---- documentation that is not a command -----------------------------------------------------------
REPO_PATH = r"(?:zoo|conf|tests|benchmarks|docs|scripts|notebooks)/[\w./-]+\.(?:py|md|yaml|ipynb|sbatch|png|mid|wav)"


def test_readme_links_point_at_files():
    """Markdown links and every repository path the README names (placeholders like <name> aside) exist."""
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)\)", text) + re.findall(rf"(?<![\w/<>-])({REPO_PATH})(?![\w<>])", text)
    local = sorted({link for link in links if "://" not in link})
    missing = [p for p in local if not (ROOT / p).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_tests_named_in_the_readme_and_here_exist():
    """`tests/test_x.py::test_name` references (README, docs/, COMMANDS' reasons) name real test functions."""
    docs = [README, ROOT / "docs" / "adding_a_model.md", ROOT / "docs" / "configuration.md"]
    text = "\n".join(p.read_text() for p in docs) + "\n".join(reason for _, reason in COMMANDS.values())
    refs = set(re.findall(r"(tests/test_\w+\.py)::(test_\w+)", text))
    assert refs
    for path, name in sorted(refs):
        assert (ROOT / path).is_file() and f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name} does not exist"


def test_readme_names_every_shipped_checkpoint_and_experiment():
    from zoo.hub import REGISTRY

    text = README.read_text()
    for name in REGISTRY:
        assert f"`{name}`" in text, f"the zoo table does not list the shipped checkpoint {name}"
    for member in ("gpt_pydoc", "image_gpt_digits", "music_transformer_bach", "text2image_digits"):
        assert (ROOT / "conf" / "experiment" / f"{member}.yaml").is_file(), member
    assert text.count("<!-- bench-table -->") == 2, "the benchmark table needs its two markers"
    assert len(text.splitlines()) < 400, "keep the README skimmable; move long material to docs/"


def test_help_lists_every_name_and_answers_the_common_questions():
    """`python -c "import zoo; help(zoo.load)"` (run as written) covers names, returns, sampling, files, errors."""
    env = {**os.environ, "PAGER": "cat", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", "import zoo; help(zoo.load)"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    import zoo

    for name in zoo.list_models():
        assert name in text, f"help(zoo.load) does not list {name}"
    for words in ("Returns", "Pretrained", "generate(", "labels=", "guidance=", "caption", "primer=", "out=",
                  "max_new_tokens", "temperature", "top_k", "top_p", "seed", "device", "dtype", "bfloat16",
                  ".ckpt", "zoo-export", "Hugging Face GPT-2", "path=", "ZOO_CACHE", "sha256", "HubError",
                  "ChecksumError", "CheckpointError", "unknown name"):
        assert words in text, f"help(zoo.load) does not mention {words!r}"


def test_help_of_generate_documents_each_member():
    import pydoc

    from zoo.hub import Pretrained

    text = pydoc.render_doc(Pretrained.generate, renderer=pydoc.plaintext)
    for member in ("text", "image", "captions", "music"):
        assert f"\n        {member} (" in text or f"{member} (" in text, member
    for words in ("-> str", "-> Tensor", "-> pretty_midi.PrettyMIDI", "num_samples", "stop", "guidance"):
        assert words in text, words


def test_a_loaded_model_shows_as_one_line():
    import zoo

    text = repr(zoo.load("gpt-pydoc", dtype="bfloat16"))
    assert text == ("Pretrained(name='gpt-pydoc', model_type='gpt', params=1,824,192, codec='char', device=cpu, "
                    "dtype=bfloat16)")


def test_gallery_script_regenerates_the_pictures(tmp_path):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_gallery
    finally:
        sys.path.remove(str(ROOT / "docs"))
    written = {p.name for p in make_gallery.main(["--out", str(tmp_path)])}
    shipped = {p.name for p in (ROOT / "docs" / "gallery").iterdir()}
    assert written == shipped, (written, shipped)
    assert sum(p.stat().st_size for p in (ROOT / "docs" / "gallery").iterdir()) < 1_000_000, "keep docs/gallery small"
    text = README.read_text()
    for name in shipped - {"text2image_digits.txt"}:
        assert f"docs/gallery/{name}" in text, f"README does not show docs/gallery/{name}"
