"""Schemathesis against a running ``identity serve``: every operation of /openapi.json fuzzed
with schema-valid and schema-invalid requests under a real admin key, half of them aimed at a
real collection so they get past the 404. No answer may be a 5xx, and every status must be one
the spec documents for that operation (the problem answers in services/api/schemas.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from served import Served, serve

# Examples per operation and generation mode: 25 operations x 2 modes x this stays near a minute
# on two busy cores.
EXAMPLES = 8


@pytest.fixture(scope="module")
def svc(settings) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    with serve(settings) as served:
        yield served


def test_openapi_operations_never_answer_5xx_or_undocumented(svc: Served, keys) -> None:  # type: ignore[no-untyped-def]
    key, _ = keys.create("admin", name="schemathesis")
    collection = "s-" + uuid.uuid4().hex[:10]
    r = httpx.post(
        f"{svc.url}/v1/collections", json={"name": collection}, headers={"X-API-Key": key}
    )
    assert r.status_code == 201, r.text
    schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
            def call(case, real: bool) -> None:  # type: ignore[no-untyped-def]
                params = case.path_parameters or {}
                # a real collection for reads and writes, never for deleting it
                if real and "cid" in params and case.method.upper() != "DELETE":
                    params["cid"] = collection
                response = case.call(base_url=svc.url, headers={"X-API-Key": key}, timeout=120)
                case.validate_response(
                    response, checks=[not_a_server_error, status_code_conformance]
                )

            try:
                call()
            except Unsatisfiable:
                # nothing in the operation can be made schema-invalid (no parameters, or only
                # the key header, which the test always sends): no negative case to run
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    assert operations >= 20
    assert svc.alive(), svc.log_tail()
    assert not failures, "\n\n".join(failures)
