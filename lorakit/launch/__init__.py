"""Papermill executions: the one notebook wrapper (`notebooks`), sweeps and their execution pools.
Imports only `lorakit.config` and `lorakit.record`: it runs notebooks, it does not import the sides
it launches."""
