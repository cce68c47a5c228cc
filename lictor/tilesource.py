"""Where a tiled log's files come from: an HTTP(S) tlog-tiles prefix or a directory.

A `TileSource` returns whole bodies or raises: `UnavailableError` when the
source cannot be reached, `NotFoundError` for a missing file. Bodies are size
capped (after decompression over HTTP) and redirects stay on the same host.
`fetch_tile` and `fetch_bundle` check lengths against what the checkpoint
implies, falling back to the full tile's prefix when a partial one is gone.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Protocol

import httpx

from lictor import __version__
from lictor.errors import (
    AuditError,
    InvalidRequestError,
    KeyFormatError,
    LogError,
    NotFoundError,
    UnavailableError,
)
from lictor.log.merkle import HASH_SIZE
from lictor.log.note import Verifier, parse_verifier_key
from lictor.log.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    Tile,
    decode_bundle,
    tile_for,
)

MAX_CHECKPOINT_SIZE = 1 << 20
MAX_BODY_SIZE = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
MAX_REDIRECTS = 5
MAX_KEY_FILE_SIZE = 1 << 12


class TileSource(Protocol):
    """Where a log's files come from. Both methods return the whole body or raise:
    `NotFoundError` if the file does not exist, `UnavailableError` if the
    source cannot be reached."""

    def checkpoint(self) -> bytes: ...

    def read(self, path: str) -> bytes: ...


class DirectorySource:
    """A log laid out on disk as a tlog-tiles prefix (``checkpoint``, ``tile/...``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def checkpoint(self) -> bytes:
        return self._read("checkpoint", MAX_CHECKPOINT_SIZE)

    def read(self, path: str) -> bytes:
        return self._read(path, MAX_BODY_SIZE)

    def _read(self, path: str, limit: int) -> bytes:
        parts = PurePosixPath(path).parts
        if not parts or path.startswith("/") or ".." in parts:
            raise InvalidRequestError(f"refusing to read {path!r} outside the log")
        file = self.root.joinpath(*parts)
        try:
            with file.open("rb") as f:
                data = f.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise NotFoundError(f"{file}: not found") from e
        except OSError as e:
            raise UnavailableError(f"{file}: {e.strerror}") from e
        if len(data) > limit:
            raise AuditError(f"{file}: larger than {limit} bytes")
        return data


class HttpSource:
    """A tlog-tiles prefix over HTTP(S).

    Redirects are followed only within the same scheme, host and port; bodies
    are capped (after gzip decoding). A bare server URL whose ``/checkpoint``
    is missing falls back to ``/log`` (where Lictor serves its log).
    """

    def __init__(
        self, url: str, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as e:
            raise InvalidRequestError(f"invalid URL {url!r}: {e}") from e
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidRequestError(f"not an http(s) URL: {url!r}")
        self.prefix = url.rstrip("/")
        self._bare = parsed.path in ("", "/")
        self._owned = client is None
        if client is None:
            client = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0))
        self._client = client

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def checkpoint(self) -> bytes:
        try:
            return self._get(f"{self.prefix}/checkpoint", MAX_CHECKPOINT_SIZE)
        except NotFoundError:
            if not self._bare:
                raise
        self.prefix, self._bare = self.prefix + "/log", False
        return self._get(f"{self.prefix}/checkpoint", MAX_CHECKPOINT_SIZE)

    def read(self, path: str) -> bytes:
        return self._get(f"{self.prefix}/{path}", MAX_BODY_SIZE)

    def _get(self, url: str, limit: int) -> bytes:
        origin = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                body, target = self._fetch(url, limit)
            except httpx.DecodingError as e:
                raise AuditError(f"{url}: bad content encoding: {e}") from e
            except httpx.HTTPError as e:
                raise UnavailableError(f"{url}: {type(e).__name__}: {e}") from e
            if target is None:
                return body
            if (target.scheme, target.host, target.port) != (
                origin.scheme,
                origin.host,
                origin.port,
            ):
                raise UnavailableError(f"{url}: refusing redirect to another host ({target})")
            url = str(target)
        raise UnavailableError(f"{url}: too many redirects")

    def _fetch(self, url: str, limit: int) -> tuple[bytes, httpx.URL | None]:
        headers = {"Accept-Encoding": "gzip, identity", "User-Agent": f"lictor/{__version__}"}
        with self._client.stream("GET", url, headers=headers, follow_redirects=False) as r:
            if r.is_redirect and r.next_request is not None:
                return b"", r.next_request.url
            if r.status_code == 404:
                raise NotFoundError(f"{url}: 404 Not Found")
            if r.status_code != 200:
                raise UnavailableError(f"{url}: HTTP {r.status_code}")
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise AuditError(f"{url}: larger than {limit} bytes")
            return bytes(body), None


@contextmanager
def open_source(location: str, *, timeout: float = 10.0) -> Iterator[TileSource]:
    """An `HttpSource` for an http(s) URL, else a `DirectorySource`; closed on exit."""
    if location.startswith(("http://", "https://")):
        source = HttpSource(location, timeout=timeout)
        try:
            yield source
        finally:
            source.close()
        return
    root = Path(location)
    if not os.path.isdir(root):  # unlike Path.is_dir, never raises (e.g. name too long)
        raise InvalidRequestError(f"{_short(location)} is neither an http(s) URL nor a directory")
    yield DirectorySource(root)


def load_verifier(key: str) -> Verifier:
    """A verifier key given as the vkey string itself or as a file containing it.

    The string is tried as a key first, so a long key is never taken for a path.
    """
    try:
        return parse_verifier_key(key)
    except KeyFormatError as e:
        key_error = e
    text = _read_key_file(key)
    if text is None:
        if "+" in key:
            raise key_error
        raise InvalidRequestError(f"key {_short(key)} is neither a verifier key nor a file")
    return parse_verifier_key(text.strip())


def _read_key_file(path: str) -> str | None:
    """The text of the key file at ``path``, or None if there is no such file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_SIZE + 1)
    except ValueError:  # an embedded NUL: not a path
        return None
    except OSError as e:
        if isinstance(e, FileNotFoundError | NotADirectoryError) or e.errno == errno.ENAMETOOLONG:
            return None
        raise InvalidRequestError(f"cannot read key file {_short(path)}: {e.strerror}") from e
    if len(data) > MAX_KEY_FILE_SIZE:
        raise InvalidRequestError(
            f"key file {_short(path)} is larger than {MAX_KEY_FILE_SIZE} bytes"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"key file {_short(path)} is not UTF-8") from e


def _short(text: str, limit: int = 80) -> str:
    """``repr(text)``, cut to ``limit`` characters so a huge argument stays readable."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


# Tiles and bundles ------------------------------------------------------------


def fetch_tile(source: TileSource, tile: Tile) -> bytes:
    """The body of a hash tile, exactly ``32 * width`` bytes, or `AuditError`.

    A missing partial tile is replaced by the prefix of the full tile.
    """
    fetched, data = _fetch_or_full(source, tile)
    _require_length(fetched.path, data, fetched.width * HASH_SIZE)
    return data[: tile.width * HASH_SIZE]


def fetch_bundle(source: TileSource, tile: Tile) -> list[bytes]:
    """The ``width`` entries of an entry bundle, or `AuditError`.

    A missing partial bundle is replaced by the first entries of the full one.
    """
    fetched, data = _fetch_or_full(source, tile)
    try:
        entries = decode_bundle(data)
    except LogError as e:
        raise AuditError(f"{fetched.path}: {e.message}") from e
    if len(entries) != fetched.width:
        raise AuditError(
            f"{fetched.path}: bundle has {len(entries)} entries, expected {fetched.width}"
        )
    return entries[: tile.width]


def fetch_entry(source: TileSource, index: int, size: int) -> bytes:
    """Entry ``index`` of a tree of ``size``, from its entry bundle."""
    tile = tile_for(0, index, size, entries=True)
    return fetch_bundle(source, tile)[index - tile.index * TILE_WIDTH]


def _fetch_or_full(source: TileSource, tile: Tile) -> tuple[Tile, bytes]:
    """The tile's body, or (for a missing partial) the full tile's; says which it read."""
    try:
        return tile, source.read(tile.path)
    except NotFoundError as e:
        if not tile.is_partial:
            raise AuditError(f"{tile.path}: missing, but the checkpoint implies it") from e
    full = replace(tile, width=TILE_WIDTH)
    try:
        return full, source.read(full.path)
    except NotFoundError as e:
        raise AuditError(
            f"{tile.path}: missing (and so is {full.path}), but the checkpoint implies it"
        ) from e


def _require_length(path: str, data: bytes, want: int) -> None:
    if len(data) != want:
        raise AuditError(f"{path}: tile has {len(data)} bytes, expected {want}")
