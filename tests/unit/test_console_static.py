"""The console's static file server (vocalbridge_devstack.static): what it serves, how it
caches, and that nothing outside the built app and the OpenAPI document can be read."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from vocalbridge_devstack.static import StaticSite, handle


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>console</title>")
    (root / "assets" / "app-1234.js").write_text("console.log('x');\n" * 200)
    (tmp_path / "secret.txt").write_text("do not serve")
    (tmp_path / "openapi.json").write_text('{"openapi": "3.1.0"}')
    return StaticSite(root, tmp_path / "openapi.json")


def test_serves_the_app_the_assets_and_the_document(site):
    index = site.respond("GET", "/", {})
    assert index.status == 200 and index.headers["Cache-Control"] == "no-cache"
    assert index.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in index.headers["Content-Security-Policy"]
    asset = site.respond("GET", "/assets/app-1234.js?v=1", {"accept-encoding": "gzip, br"})
    assert asset.status == 200 and "immutable" in asset.headers["Cache-Control"]
    assert asset.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(asset.body) == ("console.log('x');\n" * 200).encode()
    plain = site.respond("GET", "/assets/app-1234.js", {})
    assert "Content-Encoding" not in plain.headers and plain.body.startswith(b"console.log")
    document = site.respond("GET", "/v1/openapi.json", {})
    assert document.status == 200 and document.body == b'{"openapi": "3.1.0"}'
    assert document.headers["Content-Type"] == "application/json; charset=utf-8"


def test_revalidates_with_the_etag(site):
    first = site.respond("GET", "/", {})
    again = site.respond("GET", "/", {"if-none-match": first.headers["ETag"]})
    assert again.status == 304 and again.body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../../secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/secret.txt",
        "/assets/",
    ],
)
def test_nothing_outside_the_app_is_served(site, path):
    assert site.respond("GET", path, {}).status == 404


def test_only_reads(site):
    assert site.respond("POST", "/", {}).status == 405
    assert site.respond("HEAD", "/", {}).status == 200


def test_says_when_the_console_is_not_built(tmp_path):
    response = StaticSite(tmp_path / "missing", None).respond("GET", "/", {})
    assert response.status == 503 and b"make web" in response.body


async def test_keeps_the_connection_alive_over_a_real_socket(site):
    server = await asyncio.start_server(lambda r, w: handle(site, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/", "/healthz"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK"), head
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
            await reader.readexactly(length)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        rest = await reader.read()
        assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"\r\n\r\n"), rest
        writer.close()
