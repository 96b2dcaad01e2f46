"""`GET /docs`: the API's reference as one self-contained HTML page, rendered on the server
from the app's own OpenAPI schema. FastAPI's /docs and /redoc load their scripts from a CDN
(an update server may have no way out, and a page that fetches code from elsewhere is one more
thing to trust), so they are off (`create_app`) and this page has no script and no external
URL: paths, methods, parameters, bodies, answers and the models, linked within the page."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

router = APIRouter(tags=["docs"])

API_DOCS_PATH = "/docs"
METHODS = ("get", "post", "put", "patch", "delete")
# Inline style only, nothing else from anywhere (the page is its own whole document).
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
REF_PREFIX = "#/components/schemas/"


@cache
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("server.web", "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["linked_type"] = linked_type
    return env


@router.get(API_DOCS_PATH, response_class=HTMLResponse, include_in_schema=False)
def get_api_docs(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    page = (
        _templates()
        .get_template("api_docs.html")
        .render(
            info=spec.get("info", {}),
            operations=operations(spec),
            models=sorted(spec.get("components", {}).get("schemas", {}).items()),
        )
    )
    return HTMLResponse(
        page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    )


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation, grouped by tag then in the schema's order: method, path, summary,
    description, parameters, the request body's type and each answer's."""
    found = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {})
            found.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "tag": (op.get("tags") or ["other"])[0],
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "parameters": op.get("parameters", []),
                    "body": {kind: c.get("schema", {}) for kind, c in body.items()},
                    "responses": [
                        (status, r.get("description", ""), _answer_schema(r))
                        for status, r in op.get("responses", {}).items()
                    ],
                }
            )
    order = {tag: i for i, tag in enumerate(dict.fromkeys(op["tag"] for op in found))}
    return sorted(found, key=lambda op: order[op["tag"]])


def _answer_schema(response: dict[str, Any]) -> dict[str, Any]:
    content = response.get("content", {})
    first: dict[str, Any] = next(iter(content.values()), {})
    schema: dict[str, Any] = first.get("schema", {})
    return schema


def type_of(
    schema: dict[str, Any], model: Callable[[str], str] = str, text: Callable[[str], str] = str
) -> str:
    """A schema as one short type expression: `Device`, `list[Report]`, `integer | null`;
    `model` renders a model's name and `text` anything else from the schema (`linked_type`:
    a link, and escaped)."""
    if not schema:
        return ""
    if "$ref" in schema:
        return model(str(schema["$ref"]).removeprefix(REF_PREFIX))
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            return " | ".join(type_of(s, model, text) for s in schema[combined])
    if "enum" in schema:
        return " | ".join(text(repr(v)) for v in schema["enum"])
    kind = text(str(schema.get("type", "any")))
    if kind == "array":
        return f"list[{type_of(schema.get('items', {}), model, text) or 'any'}]"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        inner = type_of(extra, model, text) if isinstance(extra, dict) else "any"
        return f"dict[str, {inner}]"
    return f"{kind} ({text(str(schema['format']))})" if "format" in schema else kind


def linked_type(schema: dict[str, Any]) -> Markup:
    """`type_of` as HTML: each model's name a link to it further down the page."""

    def link(name: str) -> str:
        return f'<a href="#model-{escape(name)}">{escape(name)}</a>'

    return Markup(type_of(schema, link, lambda s: str(escape(s))))  # noqa: S704  # escaped
