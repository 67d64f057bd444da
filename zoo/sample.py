"""zoo-sample: generate from a trained checkpoint.

    zoo-sample checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt prompt="The assert statement" top_p=0.9
    zoo-sample checkpoint=PATH prompts='["def ", "import"]' num_samples=2 stop='["\\n\\n"]' seed=0
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from zoo.text_generation import generate_text

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="sample", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from zoo.checkpoint import model_from_checkpoint

    opts = OmegaConf.to_container(cfg, resolve=True)
    model, codec, _ = model_from_checkpoint(opts.pop("checkpoint"), device=opts.pop("device"))
    if codec is None or codec.type_name not in ("char", "byte", "bpe"):
        kind = codec.type_name if codec else "none"
        raise SystemExit(f"zoo-sample: this checkpoint's codec is {kind!r}; text sampling needs char, byte or bpe")
    prompts = list(opts.pop("prompts") or [])
    prompt = opts.pop("prompt")
    if prompt is not None:
        prompts.append(prompt)
    opts.pop("out")
    n = opts.pop("num_samples")
    stream = opts.pop("stream") and len(prompts) <= 1 and n == 1
    texts = generate_text(model, codec, prompts or [""] , num_samples=n, stop=opts.pop("stop"),
                          on_text=(lambda s: (sys.stdout.write(s), sys.stdout.flush())) if stream else None,
                          **opts)
    if stream:
        print()
    else:
        for i, (p, t) in enumerate(texts):
            print(f"=== sample {i} (prompt {p!r})\n{p}{t}\n")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _main()


if __name__ == "__main__":
    main()
