"""IDunno: batched inference (models, the worker process, job scheduling, metrics)."""
