"""The query API: the live four-colour map, grid history, hot spots, dead letters and health checks.

Build it with :func:`pingan.api.app.create_app`; run it with :func:`pingan.api.app.serve` (``pingan api``).
"""
