"""Who the caller is: the key's name, role and scope (what a dashboard shows as "this centre")."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from pingan.api.access import ACTORS, ReaderDep
from pingan.api.deps import ResourcesDep
from pingan.api.responses import OrjsonResponse

router = APIRouter(prefix="/v1", tags=["access"])


class ScopeInfo(BaseModel):
    unit_id: str
    level: str = Field(description="district, subdistrict, community or police_station")
    name: str
    grids: int


class Me(BaseModel):
    name: str
    role: str
    may_act: bool = Field(description="may act on alerts (operator, admin)")
    scope: ScopeInfo | None = Field(description="the unit its reads are limited to; null: every grid")


@router.get("/me", summary="The key's name, role and scope", response_model=Me)
def me(resources: ResourcesDep, caller: ReaderDep) -> Response:
    scope = resources.scopes.of(caller)
    info = None
    if scope is not None:
        unit = resources.registry.unit(scope.unit_id)
        info = {"unit_id": scope.unit_id, "level": scope.level, "name": unit.name if unit else scope.unit_id,
                "grids": len(scope.grid_ids)}  # fmt: skip
    return OrjsonResponse({"name": caller.name, "role": caller.role, "may_act": caller.role in ACTORS, "scope": info})
