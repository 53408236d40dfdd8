"""One module per DVC stage, each run as `python -m stages.NAME` (dvc.yaml)."""

from pipeline.memory import keep_freed_memory

# Every stage is a process of its own that allocates the same large tensors step after step:
# reusing freed memory saves the page faults of fresh mappings (pipeline/memory.py).
keep_freed_memory()
