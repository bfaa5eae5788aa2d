"""The API application factory.

::

    app = create_app(dsn=..., pepper=..., broker=BrokerAdmin(...),
                     endpoint=BrokerEndpoint(host=..., port=8883, ca_pem=...))

Serve it only over TLS (``mimamori cloud api serve`` passes the certificate to uvicorn).
Further routers (SOC workflows) are added to :data:`ROUTERS` or passed as ``routers``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from mimamori.cloud.api import alerts, enroll, incidents, notifications
from mimamori.cloud.api.auth import MIN_PEPPER_BYTES
from mimamori.cloud.api.context import ApiContext, BrokerEndpoint, GatewayProvisioner
from mimamori.cloud.errors import CloudError, ConfigError

#: The routers every app has.
ROUTERS: tuple[APIRouter, ...] = (
    enroll.router,
    alerts.router,
    incidents.router,
    notifications.router,
)


def create_app(
    *,
    dsn: str,
    pepper: bytes,
    broker: GatewayProvisioner,
    endpoint: BrokerEndpoint,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the API around ready objects; no environment is read here."""
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ConfigError(f"the token pepper must be at least {MIN_PEPPER_BYTES} bytes")
    app = FastAPI(title="mimamori cloud API", version="1", docs_url=None, redoc_url=None)
    app.state.ctx = ApiContext(dsn=dsn, pepper=pepper, broker=broker, endpoint=endpoint)
    for router in (*ROUTERS, *routers):
        app.include_router(router)

    @app.exception_handler(CloudError)
    async def _cloud_error(_request: Request, exc: CloudError) -> JSONResponse:
        # A database or broker failure is ours, not the caller's: a plain 503, no details.
        return JSONResponse({"detail": "service unavailable"}, status_code=503)

    return app
