"""HTTP only: the app factory, routers per endpoint, the error map."""

from yun.api.app import create_app
from yun.api.services import Services, bootstrap, build_services

__all__ = ["Services", "bootstrap", "build_services", "create_app"]
