"""Health of the control plane for the console's dashboard (filled in next)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])
