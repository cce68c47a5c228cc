"""The web console's files: HTML pages, ES modules, styles and vendored libraries.

Served by `lictor.server.console`; nothing here is built or generated.
"""
