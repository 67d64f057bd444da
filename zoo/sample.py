"""zoo-sample: generate from a trained checkpoint; text streams to stdout, media goes to files.

    zoo-sample checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt prompt="The assert statement" top_p=0.9
    zoo-sample checkpoint=PATH prompts='["def ", "import"]' num_samples=2 stop='["\\n\\n"]' seed=0
    zoo-sample checkpoint=gpt-pydoc quantize=int8 prompt="The assert statement"   # int8 weights (CPU)

The checkpoint's member (`zoo.members.member_for`) parses the options, draws the samples and writes the
files; this entry point prints what it reports. conf/sample.yaml holds the defaults of every member's
inputs: one a member does not take is an error only when given on the command line. Sampling options
not given on the command line are the checkpoint's defaults (generation_config.json), as in
`zoo.load(...).generate` and zoo-serve (`Pretrained.sample`): one seed, one sample, whichever is asked.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked
from zoo.hub import load
from zoo.sampling import OPTIONS

SETUP_KEYS = ("checkpoint", "device", "quantize")  # how to load the model; everything else goes to its member


def given_on_command_line() -> set[str]:
    """The option names this run's overrides set (`labels=3` -> labels)."""
    return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task if "=" in o}


@hydra.main(config_path=CONF_DIR, config_name="sample", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    quiet_console()
    opts = resolve(cfg, "zoo-sample")
    try:
        m = load(opts.pop("checkpoint"), device=opts.pop("device"), quantize=opts.pop("quantize"))
        given = given_on_command_line()
        opts = {k: v for k, v in opts.items() if k in given or k not in OPTIONS}  # the rest: the checkpoint's

        def on_text(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        samples = m.sample(opts, explicit=given, on_text=on_text)
    except (ValueError, OSError) as e:  # unknown name or option, bad file, checksum mismatch: no traceback
        raise SystemExit(f"zoo-sample: {e}") from None
    print(samples.describe())


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_checked("sample", _main)


if __name__ == "__main__":
    main()
