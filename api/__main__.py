"""``python -m pingan.api``: the same as ``pingan api``."""

from pingan.api.app import serve
from pingan.settings import Settings

if __name__ == "__main__":
    serve(Settings())
