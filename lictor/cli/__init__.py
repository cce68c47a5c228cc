"""The `lictor` command line: one module per command group."""
