"""`lictor.sdk.urls` against `urllib.parse`, which it stands in for on `lictor run`'s way."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote as stdlib_quote
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.sdk.connections import URL_SAFE, Connections, TransportError
from lictor.sdk.urls import URLError, quote, split_url

LABEL = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
IPV6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
PATH = st.lists(st.text("abcxyz019-._~%!$&'()*+,;=:@", max_size=6), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts)
)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=st.one_of(NAME, IPV4, IPV6),
    port=st.one_of(st.none(), st.integers(0, 65535)),
    path=PATH,
    slash=st.booleans(),
)
def test_a_server_url_splits_as_urlsplit_splits_it(
    scheme: str, host: str, port: int | None, path: str, slash: bool
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}{'/' if slash else ''}"
    parts, expected = split_url(url), urlsplit(url)
    assert parts.scheme == expected.scheme
    assert parts.host == expected.hostname
    default = 443 if expected.scheme == "https" else 80
    assert parts.port == (expected.port if expected.port is not None else default)
    assert parts.path == expected.path.rstrip("/")


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("http://127.0.0.1:7300", "127.0.0.1:7300"),
        ("http://Plane.Example:80/base/", "plane.example"),
        ("https://plane.example:8443", "plane.example:8443"),
        ("https://[::1]:443/", "[::1]"),
        ("http://[fe80::1]:7300", "[fe80::1]:7300"),
    ],
)
def test_the_host_header_names_the_port_only_where_it_is_not_the_default(
    url: str, authority: str
) -> None:
    assert split_url(url).authority == authority


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:7300",  # no scheme
        "ftp://plane.example",
        "http://",
        "http:///path",
        "http://:7300",
        "http://user:secret@plane.example",  # a credential belongs in LICTOR_CREDENTIAL
        "http://plane.example/?q=1",
        "http://plane.example/#top",
        "http://plane.example:http",
        "http://plane.example:99999",
        "http://plane.example:-1",
        "http://plane.example:７３００",  # digits, but not ASCII ones
        "http://[::1",
        "http://[::1]x:80",
        "http://::1]:80",
        "http://plane example",
        "http://plane.example/\n",
    ],
)
def test_anything_else_is_refused_by_name(url: str) -> None:
    with pytest.raises(URLError, match=r"URL|port|host|IPv6|']'"):
        split_url(url)
    with pytest.raises(TransportError):  # as a server that cannot be reached, at the call
        Connections(url).exchange("GET", "/", None, {}, 1.0)


@given(st.text(), st.sampled_from(["", "/", URL_SAFE]))
def test_quote_gives_what_urllib_quote_gives(text: str, safe: str) -> None:
    try:
        expected = stdlib_quote(text, safe=safe)
    except UnicodeEncodeError:  # a lone surrogate: refused alike
        with pytest.raises(UnicodeEncodeError):
            quote(text, safe)
        return
    assert quote(text, safe) == expected


def test_a_call_does_not_load_the_idna_codec() -> None:
    """A host given as text reaches `getaddrinfo` as ASCII bytes: the IDNA codec (2.6 ms
    to import, with `stringprep` and `unicodedata`) stays off `lictor run`'s way."""
    probe = (
        "import sys, socket, threading\n"
        "from lictor.sdk.connections import Connections\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()\n"
        "connection = Connections(f'http://127.0.0.1:{server.getsockname()[1]}').connect(5)\n"
        "connection.close()\n"
        "print('encodings.idna' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
