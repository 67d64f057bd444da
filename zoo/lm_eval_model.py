"""zoo's text models as an lm-evaluation-harness model, registered as `zoo` (`pip install 'zoo[eval]'`).

    python -m zoo.lm_eval_model run --model zoo --model_args pretrained=gpt-pydoc --tasks TASK --include_path DIR

takes lm-eval's own command line (the `lm-eval` command cannot import a model registered outside lm_eval, so this
module registers `zoo`, then runs lm-eval's CLI). From Python, importing this module is the registration:

    import lm_eval, zoo.lm_eval_model
    lm_eval.simple_evaluate(model="zoo", model_args="pretrained=gpt-pydoc", tasks=[...])

`pretrained` is anything `zoo.load` takes (a name, an export folder, a .ckpt, gpt2); `device` and `dtype` go to
zoo.load too. What each request type means here (docs/evaluation.md):
  * loglikelihood(context, continuation): the summed log-probability of the continuation's tokens given the
    context's (left-truncated to the model's context), and whether each is the greedy token.
  * loglikelihood_rolling(text): minus the summed NLL that zoo's own scorer (`zoo.eval.likelihood.strided_nll`:
    windows of the model's context advancing by half of it) gives the text's tokens; the first token has
    no left context and is not scored, as there.
  * generate_until(context, {until, max_gen_toks, temperature, do_sample}): zoo's sampling (greedy unless
    do_sample with a temperature), stopping at the first `until` string, which is cut from the answer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:  # the harness is an optional extra
    raise ImportError("the lm-evaluation-harness adapter needs lm_eval: pip install 'zoo[eval]'") from e

from zoo.eval.likelihood import strided_nll
from zoo.hub.loading import load

log = logging.getLogger(__name__)


@register_model("zoo")
class ZooLM(LM):
    """A zoo text model (a member whose samples are text) behind lm-eval's three request types."""

    def __init__(self, pretrained: str = "gpt-pydoc", device: str | None = None, dtype: str | None = None,
                 batch_size: int | str = 1, **_: Any) -> None:
        super().__init__()
        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            # lm-eval's command line asks for cuda:0 unless told (--device cpu); its own models fall back the same way
            if device is not None:
                log.warning("lm-eval asked for device=%s, which this machine lacks: running on the CPU", device)
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.m = load(pretrained, device=device, dtype=dtype)
        if self.m.codec is None or self.m.member.name != "text":
            raise ValueError(f"pretrained={pretrained!r} is a model of the {self.m.member.name} member; lm-eval's "
                             "zoo adapter takes text models (a text codec), e.g. pretrained=gpt-pydoc")
        self.model, self.codec = self.m.model, self.m.codec
        self.block = min(self.model.max_len, self.model.config.block_size)

    def encode(self, text: str) -> list[int]:
        return self.codec.encode(text)

    @torch.no_grad()
    def _continuation(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log p(continuation | context) and whether every continuation token is the argmax."""
        if not continuation:
            return 0.0, True
        if not context:
            raise ValueError("loglikelihood with an empty context: this model has no start token to condition "
                             "the first continuation token on; give the request a context")
        whole = (context + continuation)[-(self.block + 1):]
        device = next(self.model.parameters()).device
        x = torch.tensor(whole[:-1], device=device)[None]  # (1, T)
        logp = torch.log_softmax(self.model(x).float(), dim=-1)[0, -len(continuation):]  # (n, V)
        targets = torch.tensor(continuation, device=device)
        total = float(logp.gather(1, targets[:, None]).sum())
        return total, bool(torch.equal(logp.argmax(-1), targets))

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            context, continuation = request.args
            # tokens of context + continuation split where the context ends, as lm-eval's own models do
            whole, ctx = self.encode(context + continuation), self.encode(context)
            out.append(self._continuation(whole[:len(ctx)], whole[len(ctx):]))
            self.cache_hook.add_partial("loglikelihood", request.args, out[-1])
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in requests:
            (text,) = request.args
            out.append(-strided_nll(self.model, self.encode(text), block=self.block).nll)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, out[-1])
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:
            context, options = request.args
            options = dict(options or {})
            until = options.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(options.pop("temperature", 0.0)) if options.pop("do_sample", False) else 0.0
            max_new = int(options.pop("max_gen_toks", 256))
            text = self.m.generate(context, max_new_tokens=max_new, temperature=temperature, stop=until,
                                   seed=int(options.pop("seed", 0)))
            answer = text[len(context):] if text.startswith(context) else text
            for stop in until:  # zoo's `stop` ends the sample after the stop string; lm-eval wants it cut
                answer = answer.split(stop)[0]
            out.append(answer)
            self.cache_hook.add_partial("generate_until", request.args, answer)
        return out


def main() -> None:
    """lm-eval's command line with `--model zoo` available."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm-eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
