"""Training: the LightningModule (`module.py`), callbacks, loggers and media (`tracking.py`), progress bar,
resilience to signals and failures, atomic checkpoint IO, checkpoint reading (`checkpoint.py`, no
Lightning import) and the builders zoo-train uses. Nothing here is imported on `import zoo` or `zoo.load`
except `checkpoint.py`."""
