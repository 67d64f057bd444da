"""zoo-sample: generate from a trained checkpoint; text streams to stdout, media goes to files.

    zoo-sample checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt prompt="The assert statement" top_p=0.9
    zoo-sample checkpoint=PATH prompts='["def ", "import"]' num_samples=2 stop='["\\n\\n"]' seed=0

Each member provides a command `(model, codec, options) -> None`, chosen by the checkpoint's codec.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

import zoo.members
from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked
from zoo.hub import load_any
from zoo.members.text import generate_text

TEXT_ONLY = ("labels", "primer", "rows", "render_audio", "out", "guidance")


def text_command(model: Any, codec: Any, opts: dict[str, Any]) -> None:
    for key in TEXT_ONLY:
        if opts.pop(key, None) not in (None, True, False, []):
            raise SystemExit(f"zoo-sample: `{key}` does not apply to a text model")
    prompts = list(opts.pop("prompts") or [])
    if opts.get("prompt") is not None:
        prompts.append(opts["prompt"])
    opts.pop("prompt")
    n = opts.pop("num_samples")
    stream = opts.pop("stream") and len(prompts) <= 1 and n == 1
    on_text = (lambda s: (sys.stdout.write(s), sys.stdout.flush())) if stream else None
    if stream and prompts:
        sys.stdout.write(prompts[0])  # the prompt, then the continuation as it is generated
    texts = generate_text(model, codec, prompts or [""], num_samples=n, stop=opts.pop("stop"), on_text=on_text,
                          **opts)
    if stream:
        print()
        return
    for i, (p, t) in enumerate(texts):
        print(f"=== sample {i} (prompt {p!r})\n{p}{t}\n")


COMMANDS: dict[str, Callable[[Any, Any, dict[str, Any]], None]] = {  # codec type -> command
    "char": text_command,
    "byte": text_command,
    "bpe": text_command,
    "image_patch": zoo.members.image.sample_command,
    "text_image": zoo.members.text2image.sample_command,
    "midi_performance": zoo.members.music.sample_command,
    "jsb_grid": zoo.members.music.sample_command,
}


@hydra.main(config_path=CONF_DIR, config_name="sample", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    quiet_console()
    opts = resolve(cfg, "zoo-sample")
    try:
        model, codec, _ = load_any(opts.pop("checkpoint"), device=opts.pop("device"))
    except (ValueError, OSError) as e:  # unknown name, bad or missing file, checksum mismatch: no traceback
        raise SystemExit(f"zoo-sample: {e}") from None
    kind = codec.type_name if codec is not None else None
    if kind not in COMMANDS:
        raise SystemExit(f"zoo-sample: no sampling command for codec {kind!r}; known: {sorted(COMMANDS)}")
    COMMANDS[kind](model, codec, opts)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_checked("sample", _main)


if __name__ == "__main__":
    main()
