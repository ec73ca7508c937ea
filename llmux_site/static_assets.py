"""Static assets served compressed and cacheable, without a collectstatic step.

Django's static view sends every file as it is on disk with no Cache-Control: a browser
fetched the charts page's 1.5 MB of plotly.js again, uncompressed, on every visit. Here
each asset is read once per process (and again only when its file changes), gzipped once
when it is text, and answered with an ETag. URLs that `{% static %}` writes carry the
content's digest (`?v=...`), so a response to such a URL may be cached for a year: a new
file gets a new URL. A URL without it (or with an old one) must be revalidated.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
import posixpath
import threading
from dataclasses import dataclass
from email.utils import formatdate

from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import StaticFilesStorage
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified

VERSION = "v"  # the query parameter that carries an asset's digest
DIGEST_CHARS = 16
COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".svg", ".json", ".map", ".txt", ".html"})
COMPRESS_FROM = 1024  # smaller files gain nothing worth a Content-Encoding
FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"  # may be stored, but asked about (If-None-Match) before each use


@dataclass(frozen=True)
class Asset:
    """One file's content as served: its bytes, their gzip form where that pays, its digest."""

    body: bytes
    gzipped: bytes | None
    digest: str
    content_type: str
    modified: float


_assets: dict[str, tuple[tuple[int, int], Asset]] = {}
_lock = threading.Lock()


def load(path: str) -> Asset:
    """The asset at `path` (absolute), read and compressed again only when the file changed."""
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _assets.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    with _lock:  # one thread compresses a large file; the others wait for its result
        cached = _assets.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        asset = _read(path, stat.st_mtime)
        _assets[path] = (key, asset)
        return asset


def _read(path: str, modified: float) -> Asset:
    with open(path, "rb") as file:
        body = file.read()
    gzipped = None
    if os.path.splitext(path)[1] in COMPRESSIBLE and len(body) >= COMPRESS_FROM:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    content_type, _ = mimetypes.guess_type(path)
    if content_type is None:
        content_type = "application/octet-stream"
    elif content_type.startswith("text/") or content_type.endswith(("javascript", "json")):
        content_type += "; charset=utf-8"
    return Asset(body, gzipped, _digest(body), content_type, modified)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:DIGEST_CHARS]


def find(name: str) -> str | None:
    """The file the static finders serve as `name`, or None."""
    normalized = posixpath.normpath(name).lstrip("/")
    found = finders.find(normalized)
    return found if isinstance(found, str) and found else None


def accepts_gzip(request: HttpRequest) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            return quality not in ("0", "0.0", "0.00", "0.000")
    return False


def serve(request: HttpRequest, name: str) -> HttpResponse:
    """Answer a GET of the static asset `name` (a path below STATIC_URL)."""
    path = find(name)
    if path is None or not os.path.isfile(path):
        raise Http404("no such static file")
    asset = load(path)
    gzipped = asset.gzipped is not None and accepts_gzip(request)
    etag = f'"{asset.digest}{"-gz" if gzipped else ""}"'
    headers = {
        "ETag": etag,
        "Cache-Control": FOREVER if request.GET.get(VERSION) == asset.digest else REVALIDATE,
        "Last-Modified": formatdate(asset.modified, usegmt=True),
    }
    if asset.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        response: HttpResponse = HttpResponseNotModified()
    else:
        body = asset.gzipped if gzipped and asset.gzipped is not None else asset.body
        response = HttpResponse(body, content_type=asset.content_type)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
    for header, value in headers.items():
        response[header] = value
    return response


class VersionedStaticFilesStorage(StaticFilesStorage):
    """`{% static %}` URLs with the asset's digest, so their responses are cached for good."""

    def url(self, name: str | None) -> str:
        url = super().url(name)
        path = find(name) if name else None
        if path is None:
            return url
        return f"{url}?{VERSION}={load_digest(path)}"


_digests: dict[str, tuple[tuple[int, int], str]] = {}


def load_digest(path: str) -> str:
    """The digest of the file at `path`, without compressing it: a page's render asks, and
    gzipping plotly.js takes a quarter of a second (done once, when it is first fetched)."""
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _digests.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    with open(path, "rb") as file:
        digest = _digest(file.read())
    _digests[path] = (key, digest)
    return digest
