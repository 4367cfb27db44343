"""The master serves the built web console: index.html revalidated on every load, hashed assets
cached for a year, text gzipped, nothing outside the build, security headers on the HTML, and a
page saying how to build the console when there is no build. Runs the real app in-process
(Starlette's TestClient) against a tiny fake build in a temporary directory."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from master.app import create_app
from master.config import MasterConfig

INDEX = (
    '<!doctype html><html><head><script type="module" src="/assets/index-4f2a9c.js"></script>'
    '<link rel="stylesheet" href="/assets/index-77b1e0.css"></head><body></body></html>'
)
SCRIPT = "export const answer = 42;\n" + "console.log('flotilla console');\n" * 40
STYLE = "body { font-family: sans-serif; }\n" * 30
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def make_build(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets" / "fonts").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "favicon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    (dist / "assets" / "index-4f2a9c.js").write_text(SCRIPT)
    (dist / "assets" / "index-77b1e0.css").write_text(STYLE)
    (dist / "assets" / "logo-0a1b2c.png").write_bytes(PNG)
    (dist / "assets" / "tiny-5e5e5e.js").write_text("export {};\n")
    (dist / "assets" / ".env").write_text("SECRET=1\n")
    (root / "secret.txt").write_text("not part of the build\n")
    (dist / "assets" / "leak.txt").symlink_to(root / "secret.txt")
    return dist


def client_for(tmp: Path, console_dir: Path) -> Iterator[TestClient]:
    config = MasterConfig(
        data_dir=tmp / "master-data",
        db={"url": f"sqlite:///{tmp / 'flotilla.db'}"},
        agent_join_token="test-join-token",
        console_dir=console_dir,
    )
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("console-built")
    yield from client_for(tmp, make_build(tmp))


@pytest.fixture(scope="module")
def unbuilt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("console-unbuilt")
    yield from client_for(tmp, tmp / "no-such-dist")


def assert_security_headers(headers: object) -> None:
    csp = headers["content-security-policy"]  # type: ignore[index]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"  # type: ignore[index]
    assert headers["referrer-policy"] == "same-origin"  # type: ignore[index]
    assert headers["x-frame-options"] == "DENY"  # type: ignore[index]


def test_index_is_revalidated_on_every_load_and_carries_security_headers(
    built: TestClient,
) -> None:
    response = built.get("/")
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert_security_headers(response.headers)
    again = built.get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert built.get("/index.html").text == INDEX
    head = built.head("/")
    assert head.status_code == 200 and head.content == b""


def test_hashed_assets_are_cached_for_a_year_and_gzipped_when_accepted(built: TestClient) -> None:
    url = "/assets/index-4f2a9c.js"
    plain = built.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.text == SCRIPT
    assert "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == "text/javascript; charset=utf-8"
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert plain.headers["vary"] == "Accept-Encoding"

    with built.stream("GET", url, headers={"Accept-Encoding": "gzip, br"}) as zipped:
        raw = b"".join(zipped.iter_raw())
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["etag"] != plain.headers["etag"]
    assert len(raw) < len(SCRIPT) / 4
    assert gzip.decompress(raw).decode() == SCRIPT

    css = built.get("/assets/index-77b1e0.css", headers={"Accept-Encoding": "gzip"})
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert css.headers["content-encoding"] == "gzip"
    assert css.text == STYLE
    refused = built.get(url, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_binary_and_tiny_files_go_as_they_are(built: TestClient) -> None:
    png = built.get("/assets/logo-0a1b2c.png", headers={"Accept-Encoding": "gzip"})
    assert png.headers["content-type"] == "image/png"
    assert "content-encoding" not in png.headers
    assert png.content == PNG
    tiny = built.get("/assets/tiny-5e5e5e.js", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in tiny.headers
    assert tiny.text == "export {};\n"
    icon = built.get("/favicon.svg")
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.headers["cache-control"] == "no-cache"
    assert built.get("/favicon.ico").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/assets/",
        "/assets/fonts",
        "/assets/fonts/",
        "/assets/.env",
        "/assets/%2e%2e/index.html",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/fonts/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/assets/leak.txt",
        "/assets/index-4f2a9c.js%00",
        "/assets/no-such-file.js",
    ],
)
def test_nothing_outside_the_builds_files_is_served(built: TestClient, path: str) -> None:
    response = built.get(path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "not part of the build" not in response.text
    assert "SECRET" not in response.text


def test_console_routes_do_not_shadow_the_api(built: TestClient) -> None:
    assert built.get("/info").json()["branding"] == "flotilla"
    assert built.get("/api/v1/info").status_code == 200
    assert "/api/v1/master" in built.get("/openapi.json").json()["paths"]
    assert "text/html" in built.get("/docs").headers["content-type"]
    missing = built.get("/api/v1/no-such-route")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert built.get("/api/v1/master").status_code == 401
    assert built.get("/proxy/no-such-task/").status_code in (401, 404)
    paths = built.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/assets") for p in paths)


def test_without_a_build_the_root_says_how_to_build_it(unbuilt: TestClient) -> None:
    response = unbuilt.get("/")
    assert response.status_code == 503
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "cd master/console &amp;&amp; npm ci &amp;&amp; npm run build" in response.text
    assert "./scripts/demo" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert_security_headers(response.headers)
    assert unbuilt.get("/assets/index-4f2a9c.js").status_code == 404
    assert unbuilt.get("/info").status_code == 200
