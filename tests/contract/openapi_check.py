"""A second validator beside Prism: openapi-core on each recorded exchange.

Prism silently skipped the response bodies of GitHub's issue search and get-commit
(DESIGN.md, "GitHub — facts"), so every request/response pair the fake served is also
checked with openapi-core against the same subset description.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse


class OpenApiChecker:
    """Validates httpx exchanges against an OpenAPI 3.0 description (any host)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        spec = copy.deepcopy(spec)
        spec["servers"] = [{"url": "/"}]
        self.api = OpenAPI.from_dict(spec)

    def problems(self, request: httpx.Request, response: httpx.Response) -> list[str]:
        """Request and response validation errors (empty when both are valid)."""
        req = requests.Request(
            request.method,
            str(request.url),
            headers={k: v for k, v in request.headers.items()},
            data=request.content or None,
        ).prepare()
        resp = requests.Response()
        resp.status_code = response.status_code
        resp.headers.update(response.headers)
        resp._content = response.content
        resp.request = req
        out: list[str] = []
        openapi_req = RequestsOpenAPIRequest(req)
        for check in (
            lambda: self.api.validate_request(openapi_req),
            lambda: self.api.validate_response(openapi_req, RequestsOpenAPIResponse(resp)),
        ):
            try:
                check()
            except Exception as exc:  # openapi-core raises one tree per problem kind
                causes = getattr(exc, "schema_errors", None) or [exc.__cause__ or exc]
                out += [f"{request.method} {request.url.path}: {c}" for c in causes]
        return out
