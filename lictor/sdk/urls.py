"""The little of URLs the SDK needs: a control plane's URL taken apart, paths quoted.

`urllib.parse` does both, but importing it (with `ipaddress`, which it loads)
costs about 2.5 ms, on the way of every `lictor run` before its command starts.
What is read here is the URL an operator configures (``LICTOR_URL``,
``--url``): ``http://`` or ``https://``, a host name, an IPv4 address or an
IPv6 address in brackets, an optional port, an optional path under which the API
is served. The parts are those `urllib.parse.urlsplit` gives for such a URL
(tests hold the two to the same answers); anything else is refused by name.
"""

from __future__ import annotations

ALWAYS_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
DEFAULT_PORTS = {"http": 80, "https": 443}


class URLError(ValueError):
    """A control plane's URL that cannot be used; its message says why."""


class ServerURL:
    """A control plane's URL, taken apart (a plain class: `typing`'s `NamedTuple` would
    cost `lictor run` 3 ms more)."""

    __slots__ = ("host", "path", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int, path: str) -> None:
        self.scheme = scheme  # "http" or "https"
        self.host = host  # lower case; an IPv6 address without its brackets
        self.port = port
        self.path = path  # without a trailing slash: "" or "/prefix"

    @property
    def authority(self) -> str:
        """The ``Host`` header's value: the port only where it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def split_url(url: str) -> ServerURL:
    """``url``'s parts; `URLError` if it is not an ``http://`` or ``https://`` URL of a
    host, with at most a port and a path (no credentials, query or fragment)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise URLError(f"not an http:// or https:// URL: {url!r}")
    authority, slash, path = rest.partition("/")
    if any(c in rest for c in "?#") or "@" in authority:
        raise URLError(f"a server URL has no credentials, query or fragment: {url!r}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise URLError(f"a server URL has no spaces or control characters: {url!r}")
    host, port_text = _host_and_port(authority, url)
    if not host:
        raise URLError(f"no host in {url!r}")
    port = DEFAULT_PORTS[scheme]
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
            raise URLError(f"not a port: {port_text!r} in {url!r}")
        port = int(port_text)
    return ServerURL(scheme, host.lower(), port, (slash + path).rstrip("/"))


def _host_and_port(authority: str, url: str) -> tuple[str, str]:
    if authority.startswith("["):  # an IPv6 address
        end = authority.find("]")
        if end < 0 or authority[end + 1 :][:1] not in ("", ":"):
            raise URLError(f"an unclosed IPv6 address in {url!r}")
        return authority[1:end], authority[end + 2 :]
    if "]" in authority:
        raise URLError(f"a stray ']' in {url!r}")
    host, _, port = authority.partition(":")
    return host, port


def quote(text: str, safe: str) -> str:
    """``text`` percent-encoded (as UTF-8) but for letters, digits, ``_.-~`` and the
    characters of ``safe``: what `urllib.parse.quote` gives."""
    kept = ALWAYS_SAFE.union(safe.encode("ascii"))
    data = text.encode("utf-8")
    if all(b in kept for b in data):
        return text
    return "".join(chr(b) if b in kept else f"%{b:02X}" for b in data)
