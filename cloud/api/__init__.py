"""The cloud's HTTPS API: gateway enrollment, SOC users' access to alerts, administration.

Build it with :func:`mimamori.cloud.api.app.create_app`, which takes ready objects
(database DSN, the broker admin client, the token pepper) as keyword arguments; routers
for further SOC workflows are added in :mod:`mimamori.cloud.api.app`.
"""
