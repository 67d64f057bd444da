"""Training: the LightningModule (`module.py`), callbacks, loggers and media (`tracking.py`), progress bar,
resilience to signals and failures, atomic checkpoint IO, checkpoint reading (`checkpoint.py`, no
Lightning import), the builders zoo-train uses and the run itself (`run.py`: `train`, which zoo.train.run calls
once Hydra has composed the config). Nothing here is imported on `import zoo` or `zoo.load`
except `checkpoint.py`."""
