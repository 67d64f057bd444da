"""zoo-export: turn a zoo-train `.ckpt` into a self-contained folder that `zoo.load(DIR)` reads safely.

    zoo-export checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt out=exports/gpt-pydoc
    zoo-export checkpoint=... out=... dtype=bfloat16 name=my-model measure=false
    zoo-export checkpoint=runs/NAME/checkpoints/last.ckpt out=NAME-full.ckpt   # sharded folder -> one file

What the folder holds and how a sharded checkpoint is consolidated: `zoo.hub.export`.
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked
from zoo.hub.export import consolidate_checkpoint, export_checkpoint
from zoo.hub.export import measure_loss as measure_loss  # the shipped model cards' metric_command imports it here
from zoo.hub.registry import CONFIG_FILE


def main() -> None:
    @hydra.main(config_path=CONF_DIR, config_name="export", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        quiet_console()
        opts = resolve(cfg, "zoo-export")
        if str(opts["out"]).endswith(".ckpt"):  # consolidate a sharded checkpoint, nothing else
            try:
                path = consolidate_checkpoint(opts["checkpoint"], opts["out"])
            except (ValueError, FileNotFoundError) as e:
                raise SystemExit(f"zoo-export: {e}") from e
            print(f"consolidated {opts['checkpoint']} into {path}")
            return
        try:
            path = export_checkpoint(opts["checkpoint"], opts["out"], dtype=opts["dtype"], name=opts["name"],
                                     measure=opts["measure"], hardware=opts["hardware"], card=opts["card"])
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"zoo-export: {e}") from e
        card = json.loads((path / CONFIG_FILE).read_text())["card"]
        print(f"exported to {path}: " + ", ".join(sorted(p.name for p in path.iterdir())))
        if "metric_value" in card:
            print(f"{card['metric']}: {card['metric_value']}")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_checked("export", _main)


if __name__ == "__main__":
    main()
