"""Templates to responses: one Jinja2 environment (autoescaped) per app, security headers on
every page, and the live regions of a page as JSON for the little script that refreshes them.

A page's template marks each region that changes with `{% block live_<name> %}`; the same URL
asked with `Accept: application/json` answers `{"live_<name>": "<html>", ...}`, rendered from
the same context, so the live view and the page can never disagree."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from server.web.access import WebUser

LIVE_PREFIX = "live_"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would send Origin: null on forms
    "Cache-Control": "no-store",
    "Vary": "Accept, Cookie",
}


def make_templates() -> Environment:
    env = Environment(
        loader=PackageLoader("server.web", "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda value: f"{100 * float(value):.1f} %"
    env.filters["num"] = lambda value: f"{float(value):g}"
    return env


def templates_of(request: Request) -> Environment:
    env: Environment = request.app.state.web_templates
    return env


def wants_live(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    user: WebUser | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The page, or (for the live script) its live regions as JSON."""
    template = templates_of(request).get_template(name)
    full = {"request": request, "user": user, "csrf": user.session.csrf if user else "", **context}
    if wants_live(request):
        jinja_context = template.new_context(full)
        regions = {
            block: "".join(render_block(jinja_context))
            for block, render_block in template.blocks.items()
            if block.startswith(LIVE_PREFIX)
        }
        return JSONResponse(regions, headers=SECURITY_HEADERS)
    return HTMLResponse(
        template.render(full), status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
    )
