"""Training: the LightningModule (`module.py`), callbacks, loggers and media (`tracking.py`), progress bar,
resilience to signals and failures, Lightning's atomic checkpoint IO (`checkpoint_io.py`), the builders zoo-train
uses and the run itself (`run.py`: `train`, which zoo.train.run calls once Hydra has composed the config).
Reading and writing checkpoint files and LoRA live below, in `zoo.checkpoints` (no Lightning), so that nothing
here is imported on `import zoo` or `zoo.load`; `checkpoint.py` and `lora.py` re-export them under the names
training has always used."""
