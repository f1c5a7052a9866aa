"""Keep URL fetches of a public deployment away from private networks.

A check of the link's host name alone is not enough: DNS can answer with 127.0.0.1 and any hop can redirect
to 169.254.169.254. So the check sits where yt-dlp opens its TCP connections and looks at the address it
is about to connect to, on the first request, every redirect and the media URL alike.

yt-dlp has no public hook for this. Its urllib request handler opens sockets through the module-level
`yt_dlp.networking._urllib.create_connection`; we wrap that once per process, and `GuardedYoutubeDL` allows
only that handler (the requests/curl_cffi handlers connect elsewhere). Both names are private to yt-dlp, so
requirements.txt pins yt-dlp and tests/test_url_safety.py fails if the hook moves.

The wrapper is global but its policy is not: it reads a context variable that the guarded handler sets for
the duration of each of its own requests, so concurrent requests with different settings, and any other
yt-dlp use in the process, are unaffected.

Two ways around the wrapper are closed elsewhere: the handler drops ftp: (ftplib connects by itself), and
media.py lets the ffmpeg that yt-dlp hands some streams to read local files only.
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import yt_dlp
from yt_dlp.networking import _urllib

from . import environment

ALLOW_PRIVATE_ENV = "WHISPER_ALLOW_PRIVATE_URLS"
URL_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]  # True: this address may be connected to

_POLICY: contextvars.ContextVar[AddressPolicy | None] = contextvars.ContextVar("whisper_address_policy", default=None)
_ORIGINAL_CREATE_CONNECTION = _urllib.create_connection
_INSTALL_LOCK = threading.Lock()


class BlockedAddressError(OSError):
    """Raised instead of connecting; an OSError so that yt-dlp reports it like any failed connection."""

    def __init__(self, host: str, address: IPAddress):
        super().__init__(f"refused to connect to {host} ({address}): not a public address")
        self.host = host
        self.address = address


def is_public_address(address: IPAddress) -> bool:
    """False for loopback, private, shared, link-local, multicast, reserved and unspecified addresses,
    including IPv4 ones hidden in IPv6 (::ffff:10.0.0.1, 2002:7f00:1::)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not is_public_address(embedded):
            return False
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def private_urls_allowed() -> bool:
    """`WHISPER_ALLOW_PRIVATE_URLS=1` lifts the address check (a local install, the tests)."""
    return environment.flag(ALLOW_PRIVATE_ENV)


def default_policy() -> AddressPolicy | None:
    """The policy a request gets from the environment: None (no check) or public addresses only."""
    return None if private_urls_allowed() else is_public_address


def has_allowed_scheme(url: str) -> bool:
    """Only http(s) with a host: no file:, data:, ftp: or yt-dlp pseudo-schemes such as ytsearch:."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in URL_SCHEMES and bool(parts.hostname)


def _guarded_create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    """yt-dlp's connection helper with the address check: resolve once, refuse if any answer is not
    allowed, then connect to the checked IP itself so that a second DNS answer cannot differ."""
    policy = _POLICY.get()
    if policy is None:
        return _ORIGINAL_CREATE_CONNECTION(address, *args, **kwargs)
    host, port = address[0], address[1]
    answers = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    for *_, sockaddr in answers:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if not policy(ip):
            raise BlockedAddressError(host, ip)
    error: OSError = OSError(f"no address found for {host}")
    for *_, sockaddr in answers:
        try:
            return _ORIGINAL_CREATE_CONNECTION((sockaddr[0], sockaddr[1]), *args, **kwargs)
        except OSError as e:
            error = e
    raise error


def install_connection_guard() -> None:
    """Put the wrapper in place (idempotent); it does nothing for requests that set no policy."""
    with _INSTALL_LOCK:
        if _urllib.create_connection is not _guarded_create_connection:
            _urllib.create_connection = _guarded_create_connection


class GuardedUrllibRH(_urllib.UrllibRH):
    """yt-dlp's urllib handler limited to http(s), applying its address policy to its own connections.

    ftp: and data: are dropped from the opener too, so a redirect cannot reach ftplib, which connects
    without the wrapper.
    """

    _SUPPORTED_URL_SCHEMES = URL_SCHEMES
    address_policy: AddressPolicy | None = None

    def _create_instance(self, *args: Any, **kwargs: Any):
        opener = super()._create_instance(*args, **kwargs)
        for scheme in ("ftp", "data", "file"):
            opener.handle_open.pop(scheme, None)
        return opener

    def _send(self, request):
        token = _POLICY.set(self.address_policy)
        try:
            return super()._send(request)
        finally:
            _POLICY.reset(token)


class GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """A YoutubeDL whose every HTTP request goes through `GuardedUrllibRH` with `address_policy`."""

    def __init__(self, params: dict[str, Any], address_policy: AddressPolicy | None):
        install_connection_guard()
        self._address_policy = address_policy
        super().__init__(params)

    @functools.cached_property
    def _request_director(self):
        director = self.build_request_director([GuardedUrllibRH])
        for handler in director.handlers.values():
            handler.address_policy = self._address_policy
        return director
