"""zoo-serve: every loaded member behind one HTTP API (FastAPI + uvicorn) and a web page.

    from zoo.serve import create_app, load_models
    app = create_app(load_models(["gpt-pydoc"]))      # then: uvicorn.run(app) or TestClient(app)

Modules: members (what each member accepts and returns: the one place that knows the members),
worker (a thread per model: queue, batching, time limits), app (routes, errors, streaming),
__main__ (the Hydra-configured console script). Guide: docs/serving.md.
"""

from zoo.serve.app import ServeSettings, create_app, load_models
from zoo.serve.members import Limits

__all__ = ["Limits", "ServeSettings", "create_app", "load_models"]
