"""The ``stylize`` command line. Engine commands use stylecore; ``run`` drives the Prefect flows."""
