"""`python -m agent.cli`: the `habitloop` command."""

from agent.cli.app import main

main()
