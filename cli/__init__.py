"""The ``triage`` command line (entry point ``triage.cli.main:main``): one module per command group."""
