"""zoo-export's generation overrides (`+generation.KEY=VALUE`, `generation={...}`): stored in the export's
generation_config.json over the run's `samples` defaults, the defaults of `zoo.load(DIR).generate`; a key or value
that sampling would refuse stops zoo-export before anything is written, in one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_train, run_cli
from test_hub import tiny_ckpt  # noqa: F401  (a module-scoped fixture: a 2-step tiny GPT run)

import zoo
from zoo.cli import check_overrides, resolve
from zoo.export import export_and_push


def zoo_export(ckpt: Path, out: Path, *overrides: str) -> Path:
    """What `zoo-export checkpoint=CKPT out=OUT measure=false OVERRIDES` does, in process."""
    cfg = compose_train([f"checkpoint={ckpt}", f"out={out}", "measure=false", *overrides], "export")
    path, url = export_and_push(resolve(cfg, "zoo-export"))
    assert url is None
    return path


@pytest.mark.parametrize("overrides", [("+generation.temperature=0", "+generation.max_new_tokens=5"),
                                       ("+generation={temperature:0,max_new_tokens:5}",)])
def test_generation_overrides_are_stored_and_are_the_loaded_models_defaults(overrides, tiny_ckpt, tmp_path):  # noqa: F811
    path = zoo_export(tiny_ckpt, tmp_path / "tiny", *overrides)
    stored = json.loads((path / "generation_config.json").read_text())
    assert stored == {"max_new_tokens": 5, "temperature": 0, "top_k": 40}  # over the run's samples (8, 0.8, 40)
    m = zoo.load(path)
    assert m.generation == stored
    text = m.generate("The ", seed=1)
    assert len(text) == len("The ") + 5  # max_new_tokens=5 by default
    assert text == m.generate("The ", seed=2) == m.generate("The ", temperature=0, max_new_tokens=5)  # greedy
    plain = zoo.load(zoo_export(tiny_ckpt, tmp_path / "plain"))
    assert plain.generation == {"max_new_tokens": 8, "temperature": 0.8, "top_k": 40}  # the run's own


GENERATION_ERRORS = {
    "unknown key": ("+generation.temprature=0.5",
                    r"^generation: unknown sampling option 'temprature'; did you mean 'temperature'\?"),
    "not a stored default": ("+generation.seed=3",
                             r"^generation: seed is not a sampling default an export stores; accepted: "
                             r"\['guidance', 'max_new_tokens', 'min_p', 'temperature', 'top_k', 'top_p'\]$"),
    "bad value": ("+generation.temperature=-1", r"^generation: temperature must be >= 0 \(0 = greedy\), got -1$"),
    "out of range": ("+generation.top_p=1.5", r"^generation: top_p must be in \(0, 1\] or None, got 1.5$"),
    "wrong type": ("+generation.top_k=many", r"^generation: top_k='many' is not accepted: expected int or null$"),
    "not a mapping": ("generation=4", r"^generation=4 is not accepted: expected sampling defaults such as "
                                      r"\+generation.temperature=0.8 or \+generation=\{top_k:40\}$"),
}


@pytest.mark.parametrize("case", GENERATION_ERRORS)
def test_bad_generation_overrides_stop_before_anything_is_written(case, tiny_ckpt, tmp_path):  # noqa: F811
    override, expected = GENERATION_ERRORS[case]
    with pytest.raises(ValueError, match=expected):
        zoo_export(tiny_ckpt, tmp_path / "out", override)
    assert not (tmp_path / "out").exists()


def test_zoo_export_prints_a_bad_generation_override_in_one_line(tiny_ckpt, tmp_path):  # noqa: F811
    r = run_cli(["zoo-export", f"checkpoint={tiny_ckpt}", f"out={tmp_path / 'out'}", "+generation.temperature=hot"],
                cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["zoo-export: generation: temperature='hot' is not accepted: expected "
                                             "float"], r.stderr
    assert not (tmp_path / "out").exists()


def test_a_generation_key_without_plus_says_how_to_add_it():
    """`generation` is empty by default: a key without `+` names the fix, not an empty list of accepted keys."""
    assert check_overrides("export", ["checkpoint=x", "generation.temperature=0.5"]) == (
        "unknown config key 'generation.temperature': 'generation' is empty by default; "
        "add a key to it with +generation.temperature=...")
    assert check_overrides("export", ["checkpoint=x", "+generation.temperature=0.5"]) is None
