"""zoo-serve: load models and serve them over HTTP (FastAPI + uvicorn); the web page is at `/`.

    zoo-serve                                                 # every registered model on 127.0.0.1:8000
    zoo-serve port=8000 host=127.0.0.1 models='[gpt-pydoc,image-gpt-digits]'
    zoo-serve models='[runs/gpt_pydoc/checkpoints/last.ckpt]' device=cuda dtype=bfloat16 timeout_s=30
    zoo-serve models='[gpt-pydoc]' quantize=int8                # int8 weights (CPU; zoo.core.quant)
    python -m zoo.serve ...                                   # the same

The only module of zoo.serve that imports Hydra/OmegaConf (conf/serve.yaml).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked


@hydra.main(config_path=CONF_DIR, config_name="serve", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    quiet_console()
    opts = resolve(cfg, "zoo-serve")
    try:
        import uvicorn

        from zoo.serve import Limits, ServeSettings, create_app, load_models
    except ImportError as e:  # the `serve` extra is not installed
        raise SystemExit(f"zoo-serve: {e}; install the server with `pip install -e .[serve]`") from None
    import torch

    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    models = opts["models"]
    if isinstance(models, str):  # models=gpt-pydoc
        models = [models]
    try:
        settings = ServeSettings(timeout_s=float(opts["timeout_s"]), max_batch=int(opts["max_batch"]),
                                 max_queue=int(opts["max_queue"]), limits=Limits(**opts["limits"]))
        app = create_app(load_models(models, device=opts["device"], dtype=opts["dtype"],
                                            quantize=opts["quantize"]), settings)
    except (ValueError, TypeError, OSError) as e:  # unknown model or limit, bad file, checksum, bad dtype
        raise SystemExit(f"zoo-serve: {e}") from None
    print(f"zoo-serve: {', '.join(app.state.server.adapters)} on http://{opts['host']}:{opts['port']}/ "
          f"(API: /v1/models, /v1/generate, /docs; OpenAI-compatible: /v1/completions, /v1/images/generations)",
          flush=True)
    uvicorn.run(app, host=opts["host"], port=int(opts["port"]), log_level=opts["log_level"])


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_checked("serve", _main)


if __name__ == "__main__":
    main()
