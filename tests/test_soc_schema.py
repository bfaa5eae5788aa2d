"""The SOC API against its own OpenAPI schema (schemathesis): generated requests with an
admin token never get a 5xx, and every answer conforms to the documented schema.

Kept small (a few examples per operation) so the file runs in seconds. The operations are
driven with Hypothesis directly and sent through FastAPI's TestClient: schemathesis'
pytest fixture loader does not run under pytest 9, and its own requests transport breaks
on urllib3 2.8 (``PoolManager.pools`` has no ``keys``).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from conftest import Database
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from test_soc_api import make_app, seed, token

EXAMPLES_PER_OPERATION = 8


def test_soc_api_conforms_to_its_schema(plain_db: Database) -> None:
    seed(plain_db.dsn)
    headers = token(plain_db.dsn, "root")
    app = make_app(plain_db.dsn)
    client = TestClient(app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Enrollment calls the broker; it has its own tests (test_enroll.py).
    schema = schema.include(path_regex="^/v1/(incidents|audit|alerts|admin/tenants)")
    tested: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            response = client.request(
                kwargs["method"],
                kwargs["url"],
                params=kwargs.get("params"),
                headers=kwargs.get("headers"),
                content=kwargs.get("data") if isinstance(kwargs.get("data"), bytes) else None,
                json=kwargs.get("json"),
            )
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        check()
        tested.append(operation.label)
    assert "POST /v1/incidents/{incident_id}/escalate" in tested and len(tested) >= 11
