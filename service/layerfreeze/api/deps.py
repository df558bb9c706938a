"""Dependencies for the routes: the service, and the tenant behind the request's bearer token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from layerfreeze.api.service import Service
from layerfreeze.errors import Unauthorized


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_tenant(request: Request, service: Annotated[Service, Depends(get_service)]) -> str | None:
    """None when no tokens are configured (one shared space); else the token's tenant, or 401."""
    tokens = service.settings.tokens
    if not tokens:
        return None
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        given = credentials.encode()
        for token, tenant in tokens.items():
            if hmac.compare_digest(token.encode(), given):
                return tenant
    raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")


ServiceDep = Annotated[Service, Depends(get_service)]
TenantDep = Annotated[str | None, Depends(get_tenant)]
