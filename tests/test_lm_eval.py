"""lm-evaluation-harness adapter (zoo.lm_eval_model): offline tasks read from local files, through
lm_eval.simple_evaluate(model="zoo"); rolling log-likelihood equal to zoo's own strided scorer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="the harness adapter needs pip install 'zoo[eval]'")

from zoo.eval.likelihood import strided_nll  # noqa: E402
from zoo.lm_eval_model import ZooLM  # noqa: E402  (registers model="zoo")

TEXTS = ["The with statement is used to wrap the execution of a block with methods defined by a context manager. "
         "Context managers are objects that define __enter__ and __exit__; the statement calls them in order.",
         "The assert statement is a convenient way to insert debugging assertions into a program.",
         "Names refer to objects. Names are introduced by name binding operations. " * 6]
QUESTIONS = [  # (context, choices, gold): each gold answer is a phrase of the pydoc text the model learnt
    ("The assert statement is a convenient way to insert ", ["debugging assertions", "zqxv wjkq"], 0),
    ("Names refer to ", ["qqqqz zz", "objects"], 1),
]


def write_tasks(folder: Path) -> Path:
    """Two lm-eval tasks defined from local JSON-lines files: a rolling-perplexity one and a multiple choice."""
    (folder / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (folder / "mc.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "gold": g}) + "\n"
                                             for q, c, g in QUESTIONS))
    common = "dataset_path: json\ntest_split: train\n"
    (folder / "zoo_rolling.yaml").write_text(
        f"task: zoo_rolling\n{common}dataset_kwargs:\n  data_files: {{train: {folder / 'docs.jsonl'}}}\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")
    (folder / "zoo_mc.yaml").write_text(
        f"task: zoo_mc\n{common}dataset_kwargs:\n  data_files: {{train: {folder / 'mc.jsonl'}}}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: gold\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n")
    return folder


@pytest.fixture(scope="module")
def lm() -> ZooLM:
    return ZooLM(pretrained="gpt-pydoc")


def test_local_tasks_run_offline_through_simple_evaluate(tmp_path, monkeypatch, lm):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(write_tasks(tmp_path)), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=["zoo_rolling", "zoo_mc"], task_manager=tasks)
    res = out["results"]
    assert res["zoo_mc"]["acc,none"] == 1.0  # the model prefers pydoc's phrase to letter salad, both times
    # bits per byte from lm-eval's aggregation = zoo's strided NLL over the same texts (ASCII: 1 byte per char)
    ids = [lm.codec.encode(t) for t in TEXTS]
    nll = sum(strided_nll(lm.model, x, block=lm.block).nll for x in ids)
    assert res["zoo_rolling"]["bits_per_byte,none"] == pytest.approx(nll / math.log(2) / sum(map(len, TEXTS)),
                                                                     rel=1e-9)


class Request:  # what the adapter reads of lm-eval's Instance
    def __init__(self, *args):
        self.args = args


def test_loglikelihood_is_the_continuations_summed_log_probability(lm):
    context, continuation = "The assert statement", " is a"
    (ll, greedy), = lm.loglikelihood([Request(context, continuation)])
    ids = lm.codec.encode(context + continuation)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor(ids[:-1])[None]), -1)[0]
    n = len(continuation)
    expected = sum(float(logp[len(ids) - 1 - n + i, ids[len(ids) - n + i]]) for i in range(n))
    assert ll == pytest.approx(expected, abs=1e-4)
    assert greedy == all(int(logp[len(ids) - 1 - n + i].argmax()) == ids[len(ids) - n + i] for i in range(n))
    greedy_text = lm.m.generate(context, max_new_tokens=6, temperature=0)[len(context):]
    assert lm.loglikelihood([Request(context, greedy_text)])[0][1] is True


def test_generate_until_is_greedy_zoo_sampling_cut_at_the_stop_string(lm):
    context = "The with statement"
    full = lm.m.generate(context, max_new_tokens=40, temperature=0)[len(context):]
    stop = full[10:12]  # a stop string that occurs in the greedy continuation
    (answer,) = lm.generate_until([Request(context, {"until": [stop], "max_gen_toks": 40})])
    assert answer == full.split(stop)[0]
    assert lm.generate_until([Request(context, {"until": [], "max_gen_toks": 7})]) == [full[:7]]


def test_rolling_perplexity_of_the_validation_text_equals_zoos_scorer(lm):
    """gpt-pydoc's validation text (the last tenth of Python's pydoc topics, as its training split it)."""
    from zoo.hub.export import validation_data

    dm = validation_data(lm.m.config["train_config"], lm.codec)
    text = lm.codec.decode(dm.val_tokens.tolist())
    assert lm.codec.encode(text) == dm.val_tokens.tolist()  # the char codec round-trips exactly
    (rolling,) = lm.loglikelihood_rolling([Request(text)])
    own = strided_nll(lm.model, dm.val_tokens, block=lm.model.config.block_size)
    assert rolling == -own.nll  # the same windows, the same sums: equal, not merely close
    assert math.exp(own.per_token) < 4.0  # and a real score: gpt-pydoc's val loss is ~1 nat/char


def test_models_that_are_not_text_are_refused_naming_what_is_accepted():
    with pytest.raises(ValueError, match="image-gpt-digits.*member; lm-eval.s zoo adapter takes text models"):
        ZooLM(pretrained="image-gpt-digits")
