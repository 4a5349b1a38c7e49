"""The live map page (``/``) and its static files (``/web/...``): plain files, no build step, no CDN."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from pingan.api.errors import not_found
from pingan.settings import REPO_ROOT

WEB_DIR = REPO_ROOT / "web"

router = APIRouter(tags=["map page"])


@router.get("/", summary="The live situation map (警情质态云图), an HTML page", include_in_schema=False)
async def map_page() -> Response:
    page = WEB_DIR / "index.html"
    if not page.is_file():
        raise not_found(f"the map page is not installed ({page} is missing)")
    # no-cache: a new deployment's page is picked up by the next load, and revalidation is a cheap 304.
    return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})


def mount_static(app: FastAPI) -> None:
    """Scripts, styles and the vendored ECharts under ``/web`` (ETag and Last-Modified from Starlette)."""
    # check_dir=False: an install without web/ still serves the API (the page then answers 404).
    app.mount("/web", StaticFiles(directory=WEB_DIR, check_dir=False), name="web")
