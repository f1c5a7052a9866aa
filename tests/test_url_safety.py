"""The address check on yt-dlp's connections: the classifier on literal addresses (nothing is connected to),
and the guard on real requests to servers on 127.0.0.1 and 127.0.0.2. These tests also pin the private yt-dlp
hook the guard depends on: if a yt-dlp upgrade moves it, they fail."""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest
import yt_dlp
from media_server import MediaServer
from yt_dlp.networking import _urllib
from yt_dlp.networking.exceptions import RequestError

from whisper_core import url_safety
from whisper_core.url_safety import GuardedYoutubeDL, default_policy, has_allowed_scheme, is_public_address

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "169.254.169.254",  # cloud metadata
    "fe80::1",
    "fc00::1",
    "224.0.0.1",
    "ff02::1",
    "0.0.0.0",
    "::",
    "240.0.0.1",
    "255.255.255.255",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address):
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert is_public_address(ipaddress.ip_address(address))


def test_only_http_and_https_with_a_host():
    assert has_allowed_scheme("https://example.com/v") and has_allowed_scheme("HTTP://example.com")
    for url in [
        "file:///etc/passwd",
        "data:,x",
        "ftp://example.com/a",
        "ytsearch5:cats",
        "http://",
        "https:/x",
    ]:
        assert not has_allowed_scheme(url), url


def test_policy_from_environment(monkeypatch):
    monkeypatch.delenv("WHISPER_ALLOW_PRIVATE_URLS", raising=False)
    assert default_policy() is is_public_address
    monkeypatch.setenv("WHISPER_ALLOW_PRIVATE_URLS", "1")
    assert default_policy() is None


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    body = tmp_path_factory.mktemp("served") / "hello.txt"
    body.write_text("hello")
    first, second = MediaServer({"hello.txt": body}), MediaServer({"hello.txt": body}, host="127.0.0.2")
    yield first, second
    first.close()
    second.close()


def fetch(url: str, policy) -> bytes:
    with GuardedYoutubeDL({"quiet": True, "logger": _Quiet(), "socket_timeout": 2}, policy) as ydl:
        return ydl.urlopen(url).read()


class _Quiet:
    def debug(self, message):
        pass

    info = warning = error = debug


def only_first_loopback(address) -> bool:
    return address == ipaddress.ip_address("127.0.0.1")


def test_guard_is_installed_on_yt_dlps_urllib_handler():
    with GuardedYoutubeDL({"quiet": True, "logger": _Quiet()}, is_public_address) as ydl:
        assert list(ydl._request_director.handlers) == ["GuardedUrllib"]
    assert _urllib.create_connection is url_safety._guarded_create_connection


def test_refused_before_any_packet(servers):
    first, _ = servers
    before = len(first.requests)
    with pytest.raises(RequestError, match="not a public address"):
        fetch(first.url("/media/hello.txt"), is_public_address)
    assert len(first.requests) == before


def test_every_redirect_is_checked(servers):
    first, second = servers
    redirect = first.url(f"/redirect?to={second.url('/media/hello.txt')}")
    before = len(second.requests)
    with pytest.raises(RequestError, match=r"refused to connect to 127\.0\.0\.2"):
        fetch(redirect, only_first_loopback)
    assert len(second.requests) == before, "the redirect target must not be contacted"
    assert fetch(redirect, None) == b"hello"
    assert len(second.requests) == before + 1


def test_dns_answers_are_checked(servers):
    first, _ = servers
    before = len(first.requests)
    with pytest.raises(RequestError, match=r"refused to connect to localhost \((127\.0\.0\.1|::1)\)"):
        fetch(first.url("/media/hello.txt").replace("127.0.0.1", "localhost"), is_public_address)
    assert len(first.requests) == before


def test_redirect_to_ftp_is_not_followed(servers):
    """urllib would hand ftp: to ftplib, which connects without the guard."""
    first, _ = servers
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        with pytest.raises(RequestError, match="unknown url type: ftp"):
            fetch(first.url(f"/redirect?to=ftp://127.0.0.1:{port}/a.mp3"), None)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_policies_of_concurrent_requests_do_not_leak(servers):
    """One thread refused, one allowed, at the same time; connections outside yt-dlp stay unchecked."""
    first, _ = servers
    url = first.url("/media/hello.txt")
    start = threading.Barrier(2)
    results: dict[str, list[str]] = {"open": [], "guarded": []}

    def run(name, policy):
        start.wait()
        for _ in range(5):
            try:
                results[name].append(fetch(url, policy).decode())
            except RequestError:
                results[name].append("refused")

    threads = [threading.Thread(target=run, args=args) for args in (("open", None), ("guarded", is_public_address))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {"open": ["hello"] * 5, "guarded": ["refused"] * 5}
    host, port = first.base.removeprefix("http://").split(":")
    _urllib.create_connection((host, int(port))).close()


def test_plain_youtube_dl_is_not_affected(servers):
    """Another YoutubeDL in the process, on the same (wrapped) urllib handler, connects as before."""
    first, _ = servers
    params = {"quiet": True, "logger": _Quiet(), "compat_opts": {"prefer-legacy-http-handler"}}
    with yt_dlp.YoutubeDL(params) as ydl:
        assert ydl._request_director._get_handlers(yt_dlp.networking.Request(first.base))[0].RH_KEY == "Urllib"
        assert ydl.urlopen(first.url("/media/hello.txt")).read() == b"hello"
