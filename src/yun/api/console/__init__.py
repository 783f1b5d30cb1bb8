"""The web console at /console: server-rendered pages whose data comes from Yun's own HTTP API.

Page handlers render a page's frame only (who is signed in, the CSRF token); each page's numbers are
fetched by its script from /v1/organization/... and /admin/... with the session cookie, so everything
the console shows is also scriptable with a key. Assets (htmx, Chart.js) are served by Yun itself.
"""

from yun.api.console import operator, people
from yun.api.console.router import STATIC_DIR, router

# The operator's pages, and People with the invitation link, under /console too (a module for each).
router.include_router(operator.router)
router.include_router(people.router)

__all__ = ["STATIC_DIR", "router"]
