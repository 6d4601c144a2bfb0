"""Prefect flows: ``stylize-collection``, ``stylize-shard`` and ``augment-dataset``."""
