"""`GET /docs`: the API's reference, one self-contained page from the server's own OpenAPI
schema, over real HTTP. No script, no stylesheet or font from elsewhere, no external URL at
all; FastAPI's CDN-loading pages are off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from lab.fleet import running_backend

EXTERNAL_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+", re.IGNORECASE)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_backend(tmp_path_factory.mktemp("lab")) as backend:
        yield backend.server_url


class Page(HTMLParser):
    """What a page loads or links to, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []  # src= and <link href=>: fetched by the browser
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.scripts += tag == "script"
        if values.get("src"):
            self.loads.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.loads.append(str(values["href"]))
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))


def test_the_docs_page_is_self_contained(server_url: str) -> None:
    answer = httpx.get(f"{server_url}/docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert EXTERNAL_URL.findall(answer.text) == []
    page = Page()
    page.feed(answer.text)
    assert (page.scripts, page.loads) == (0, [])
    assert all(link.startswith("#") or link == "openapi.json" for link in page.links)


def test_the_docs_page_shows_every_operation_and_model_of_the_schema(server_url: str) -> None:
    schema = httpx.get(f"{server_url}/openapi.json").json()
    text = httpx.get(f"{server_url}/docs").text
    for path, item in schema["paths"].items():
        for method in item:
            assert f'id="{method.upper()}-{path}"' in text, (method, path)
    for name in schema["components"]["schemas"]:
        assert f'id="model-{name}"' in text
    # every link to a model lands on it
    page = Page()
    page.feed(text)
    targets = {link[1:] for link in page.links if link.startswith("#model-")}
    assert targets
    assert {t for t in targets if f'id="{t}"' not in text} == set()
    # parameters with their place and type, bodies and answers by model
    assert "<code>device_id</code></td><td>path</td>" in text
    assert '<a href="#model-ReleaseIn">ReleaseIn</a>' in text


@pytest.mark.parametrize("path", ["/redoc", "/docs/oauth2-redirect"])
def test_fastapis_cdn_pages_are_gone(server_url: str, path: str) -> None:
    assert httpx.get(f"{server_url}{path}").status_code == 404


def test_docs_api_md_names_the_page(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert "/docs" in text
    assert "openapi.json" in text
