"""The console's static file server: the built single-page app (web/dist) and the OpenAPI
document (gen/openapi.json), behind Envoy on the same origin as the API.

Envoy cannot serve files from disk, so it routes `/`, `/assets/*` and `/v1/openapi.json` here,
with ext_authz off on those routes only (vocalbridge_edge). The stack runner starts it locally;
in Kubernetes the console image (web/Dockerfile) runs this same file. Standard library only, so
that the image needs nothing but Python.

    python -m vocalbridge_devstack.static --port 8081 --root web/dist --openapi gen/openapi.json

Hashed assets are cached for a year; index.html and the document are revalidated (ETag).
Text is gzip-compressed when the client accepts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import mimetypes
import signal
import sys
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

INDEX = "index.html"
ASSETS_PREFIX = "/assets/"
OPENAPI_PATH = "/v1/openapi.json"
HEALTH_PATH = "/healthz"
MAX_HEADER_BYTES = 16 * 1024
IDLE_TIMEOUT_S = 60.0
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml", "application/wasm")
# The console talks only to its own origin; styles inline because the chart library sets them.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: data:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}
NOT_BUILT = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>VocalBridge console</title>"
    b"<h1>The console has not been built</h1><p>Run <code>make web</code> (or <code>make run</code>), "
    b"then reload.</p></html>"
)

mimetypes.add_type("application/javascript", ".js")
mimetypes.add_type("application/javascript", ".mjs")
mimetypes.add_type("image/svg+xml", ".svg")


@dataclass(frozen=True)
class File:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""


class StaticSite:
    """Resolves a request path to a file; caches file contents by modification time and size."""

    def __init__(self, root: Path, openapi: Path | None) -> None:
        self.root = root.resolve()
        self.openapi = openapi.resolve() if openapi else None
        self._cache: dict[Path, tuple[int, int, File]] = {}

    def _load(self, path: Path, content_type: str | None = None) -> File | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        cached = self._cache.get(path)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[2]
        body = path.read_bytes()
        kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        zipped = gzip.compress(body, 6, mtime=0) if kind.startswith(COMPRESSIBLE) and len(body) > 1024 else None
        file = File(body, zipped, kind, f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"')
        self._cache[path] = (stat.st_mtime_ns, stat.st_size, file)
        return file

    def resolve(self, path: str) -> tuple[File | None, str]:
        """(the file, its Cache-Control) for a URL path; (None, "") when there is none."""
        if path in ("/", "/" + INDEX):
            return self._load(self.root / INDEX), "no-cache"
        if path == OPENAPI_PATH and self.openapi is not None:
            return self._load(self.openapi, "application/json"), "no-cache"
        if path.startswith(ASSETS_PREFIX):
            candidate = (self.root / path.lstrip("/")).resolve()
            # No way out of the root: `..`, symlinks and encoded slashes all end up here.
            if candidate.is_relative_to(self.root / "assets"):
                return self._load(candidate), "public, max-age=31536000, immutable"
        return None, ""

    def respond(self, method: str, target: str, headers: dict[str, str]) -> Response:
        path = unquote(urlsplit(target).path)
        if path == HEALTH_PATH:
            return Response(200, "OK", {"Content-Type": "text/plain"}, b"ok\n")
        if method not in ("GET", "HEAD"):
            return Response(405, "Method Not Allowed", {"Allow": "GET, HEAD", "Content-Type": "text/plain"}, b"")
        file, cache_control = self.resolve(path)
        if file is None:
            if path in ("/", "/" + INDEX):
                return Response(503, "Service Unavailable", {"Content-Type": "text/html; charset=utf-8"}, NOT_BUILT)
            return Response(404, "Not Found", {"Content-Type": "text/plain"}, b"not found\n")
        common = {"ETag": file.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding", **SECURITY_HEADERS}
        if path == OPENAPI_PATH:
            # A public document: let API tools on other origins read it (no credentials involved).
            common["Access-Control-Allow-Origin"] = "*"
        if headers.get("if-none-match") == file.etag:
            return Response(304, "Not Modified", common)
        body, encoding = file.body, None
        if file.gzipped is not None and "gzip" in headers.get("accept-encoding", ""):
            body, encoding = file.gzipped, "gzip"
        response_headers = {"Content-Type": file.content_type, **common}
        if encoding:
            response_headers["Content-Encoding"] = encoding
        return Response(200, "OK", response_headers, body)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        return None
    return head


async def handle(site: StaticSite, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while head := await _read_head(reader):
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ")
            except ValueError:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length > MAX_HEADER_BYTES:
                writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
            if length:
                await reader.readexactly(length)  # GET and HEAD carry none; drop it
            response = site.respond(method, target, headers)
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            out = [f"HTTP/1.1 {response.status} {response.reason}"]
            response.headers.setdefault("Date", formatdate(usegmt=True))
            response.headers["Content-Length"] = str(len(response.body))
            if not keep_alive:
                response.headers["Connection"] = "close"
            out += [f"{k}: {v}" for k, v in response.headers.items()]
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(response.body)
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(host: str, port: int, root: Path, openapi: Path | None) -> None:
    site = StaticSite(root, openapi)
    server = await asyncio.start_server(
        lambda r, w: handle(site, r, w), host, port, limit=MAX_HEADER_BYTES, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    where = ", ".join(str(s.getsockname()) for s in server.sockets)
    print(f"serving {root} and {openapi} on {where}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The console's static file server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True, help="the built console (web/dist)")
    parser.add_argument("--openapi", type=Path, help="the OpenAPI document served at /v1/openapi.json")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.root, args.openapi))
    return 0


if __name__ == "__main__":
    sys.exit(main())
