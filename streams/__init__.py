"""The worker: the pure pipeline and window state (pipeline.py, windows.py) and the Faust shell (app.py,
worker.py)."""
