"""Thin Prefect tasks over stylecore. A task is a shard of work (hundreds to thousands of rows), never one image."""
