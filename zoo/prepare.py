"""zoo-prepare: tokenise text files, folders or globs into litdata chunks for `data=streaming`.

    zoo-prepare inputs=corpus/ out=data/corpus                         # byte codec, 2 processes
    zoo-prepare inputs='[a.txt,"books/**/*.txt"]' out=s3://bucket/books codec=bpe vocab_size=8192
    zoo-train data=streaming data.path=data/corpus

See docs/streaming.md; the work is `zoo.data.streaming.prepare_corpus`.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked

log = logging.getLogger("zoo.prepare")


@hydra.main(config_path=CONF_DIR, config_name="prepare", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    quiet_console()
    args = resolve(cfg, "zoo-prepare")
    from zoo.data.streaming import prepare_corpus  # Lightning: imported after the config is checked

    inputs = args.pop("inputs")
    out = args.pop("out")
    start = time.perf_counter()
    try:
        m = prepare_corpus(inputs, out, **args)
    except (OSError, ValueError, ImportError) as e:  # missing/unreadable/empty inputs, no litdata, bad values
        raise SystemExit(f"zoo-prepare: {e}") from None
    seconds = time.perf_counter() - start
    print(f"{m['n_files']} files, {m['n_bytes']:,} bytes -> {m['train_tokens']:,} training and {m['val_tokens']:,} "
          f"validation tokens ({m['codec_type']}, vocab {m['vocab_size']}) in {seconds:.1f} s "
          f"({m['n_bytes'] / max(seconds, 1e-9) / 1e6:.1f} MB/s)\n"
          f"written to {out}\nnext: zoo-train data=streaming data.path={out}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_checked("prepare", _main)


if __name__ == "__main__":
    main()
