"""zoo-serve: every loaded member behind one HTTP API (FastAPI + uvicorn) and a web page.

    from zoo.serve import create_app, load_models
    app = create_app(load_models(["gpt-pydoc"]))      # then: uvicorn.run(app) or TestClient(app)

Modules: options (a loaded model's request fields, checked; what each member accepts and returns is
its `Member`'s, zoo.members), worker (a thread per model: queue, batching, time limits), app (routes,
errors, streaming), __main__ (the Hydra-configured console script). Guide: docs/serving.md.
"""

from zoo.members.serving import Limits
from zoo.serve.app import ServeSettings, create_app, load_models

__all__ = ["Limits", "ServeSettings", "create_app", "load_models"]
