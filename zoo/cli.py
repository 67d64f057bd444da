"""Shared by the entry points: check command-line overrides before Hydra runs anything.

Hydra already rejects an unknown key ("Key 'n_layerz' is not in struct") and lists the options of a
config group; this adds the keys that *would* be accepted at that level, so a typo is fixed at once.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def check_overrides(config_name: str, argv: list[str]) -> str | None:
    """Return an error message for the first override that names an unknown key, else None."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    args = [a for a in argv if "=" in a and not a.startswith(("-", "+", "~", "hydra."))]
    keys = [a.split("=", 1)[0] for a in args]
    is_group = [(Path(CONF_DIR) / k.replace(".", "/")).is_dir() for k in keys]  # e.g. model=gpt
    groups = [a for a, g in zip(args, is_group) if g and "," not in a]
    keys = [k for k, g in zip(keys, is_group) if not g]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=groups)
    except HydraException:
        return None  # Hydra reports a bad group option itself, listing the available ones
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or not OmegaConf.is_dict(node) or leaf in set(node.keys()):  # `in node` misses ??? values
            continue
        accepted = sorted(str(k) for k in node)
        close = difflib.get_close_matches(leaf, accepted, n=1)
        hint = f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
        where = f"under '{parent}'" if parent else "at the top level"
        return (f"unknown config key '{key}'.{hint} Accepted keys {where}: {', '.join(accepted)}. "
                f"(To add a new key on purpose, write +{key}=...)")
    return None


def run_checked(config_name: str, hydra_main) -> None:
    """Validate sys.argv's overrides, then hand over to the Hydra main function."""
    message = check_overrides(config_name, sys.argv[1:])
    if message:
        print(f"Error: {message}", file=sys.stderr)
        raise SystemExit(2)
    hydra_main()


def resolve(cfg, command: str) -> dict:
    """The composed config as plain containers; a required value left at ??? stops with its key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or str(e)
        raise SystemExit(f"{command}: `{key}` is required; pass {key}=...") from None
