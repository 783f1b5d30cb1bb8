"""Item 16: every operation in /openapi.json, fuzzed with schemathesis (valid and invalid input) as the
platform admin, on SQLite and PostgreSQL: no 5xx, and only the statuses each operation documents.

The app is the real one (create_app) with no models served, so the inference endpoints, once they are
in the schema, answer 404 model_not_found at once instead of running an engine. Bounded: a fixed number
of derandomized examples per operation, so a run takes the same (short) time every time.

Driven through `APIOperation.as_strategy` under our own `hypothesis.given` rather than schemathesis'
pytest plugin: its `from_fixture` (needed for a per-test database) relies on a pytest internal that
pytest 9.2 removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.api.conftest import api_settings
from yun.api import build_services, create_app
from yun.tenancy import DEFAULT_ORG

EXAMPLES_PER_OPERATION = 100
EXISTING = {"org_id": DEFAULT_ORG, "model_id": "ext"}
"""Path parameters that name something that exists, for part of the examples."""
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # report the first failure, unshrunk
)


@pytest.fixture
def target(database_url: str, tmp_path: Path) -> Iterator[tuple[schemathesis.schemas.BaseSchema, str]]:
    settings = api_settings(tmp_path / "data", database_url)
    services = build_services(settings)
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    admin_key = services.keys.issue(DEFAULT_ORG, "platform admin", platform_admin=True).secret
    # A catalog entry for the price and free-tier paths. Nothing listens there, so its replica is never
    # healthy: a generated request naming it would be a 503 at once, never an engine run.
    services.catalog.add_external("ext", "http://127.0.0.1:9/v1")
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, services)), admin_key
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan, started by the first call, disposes the database
        services.db.dispose()


def test_every_operation(target: tuple[schemathesis.schemas.BaseSchema, str]) -> None:
    schema, admin_key = target
    headers = {"Authorization": f"Bearer {admin_key}"}
    failures: dict[str, str] = {}
    statuses: dict[str, Counter[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    for operation in operations:
        # Random ids mostly find nothing (404); existing ones take the bodies down to the store.
        known = {name: value for name, value in EXISTING.items() if "{" + name + "}" in operation.path}
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
            *([operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known)] if known else []),
            *([operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=known)] if known else []),
        )

        @SETTINGS
        @hypothesis.given(case=cases)
        def fuzz(case: schemathesis.Case) -> None:
            seen = statuses.setdefault(case.operation.label, Counter())
            response = case.call(headers=headers)
            seen[response.status_code] += 1
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures are reported
            failures[operation.label] = str(exc)[:3000]
    print({label: dict(seen) for label, seen in statuses.items()})  # what was tried, with -s
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
