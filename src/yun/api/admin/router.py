"""Platform admin API (`/admin/...`, needs a platform-admin key): everything the `yun` CLI does.

One module per concern: organizations, keys and members (`orgs`); credits, prices, free tier, usage,
statements and the ledger (`money`); compute prices and unit economics (`compute`); the model catalog
(`models`); deployments and their replicas (`deployments`); people who sign in to the console (`users`).
"""

from __future__ import annotations

from fastapi import APIRouter

from yun.api.admin import compute, deployments, models, money, orgs, users
from yun.api.openapi import error_responses

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["admin"], responses=error_responses(400, 401, 403, 404, 413))
for _module in (orgs, users, money, compute, models, deployments):
    router.include_router(_module.router)
