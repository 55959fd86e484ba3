"""The `habitloop` command line: one module per command group, over the Python API (`app` is the root command)."""

from agent.cli.app import app, main

__all__ = ["app", "main"]
