"""NBD URL parsing."""

from __future__ import annotations

import pytest

from scmt_cli.errors import UsageError
from scmt_cli.transports.nbd.url import NbdAddress, parse_nbd_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nbd://host/export", NbdAddress("export", host="host", port=10809)),
        ("nbd://host:1234/", NbdAddress("", host="host", port=1234)),
        ("nbd://host", NbdAddress("", host="host")),
        ("nbd://[::1]:99/a%20b", NbdAddress("a b", host="::1", port=99)),
        ("nbd://10.0.0.1/sda/part1", NbdAddress("sda/part1", host="10.0.0.1")),
        ("nbd+unix:///disk?socket=/run/nbd.sock", NbdAddress("disk", socket_path="/run/nbd.sock")),
        ("nbd+unix://?socket=/tmp/x", NbdAddress("", socket_path="/tmp/x")),
    ],
)
def test_valid_urls(url: str, expected: NbdAddress) -> None:
    assert parse_nbd_url(url) == expected


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("nbd://host:notaport/x", "Port"),
        ("nbd://host:70000/x", "out of range"),
        ("nbd://host:0/x", "port 0"),
        ("nbd:///export", "missing host"),
        ("nbd://user:secret@host/x", "no user name"),
        ("nbd://host/x?tls=on", "unknown query"),
        ("nbd+unix:///x", "socket=PATH"),
        ("nbd+unix:///x?socket=", "socket=PATH"),
        ("nbd+unix:///x?socket=a&socket=b", "socket=PATH"),
        ("nbd+unix://host/x?socket=/s", "take no host"),
        ("nbds://host/x", "not supported"),
        ("nbd://host/x#frag", "fragment"),
        ("nbd://host/a%00b", "NUL"),
    ],
)
def test_malformed_urls(url: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_nbd_url(url)
    assert needle in err.value.message
    assert "secret" not in err.value.message
    assert err.value.exit_code == 2


def test_describe_round_trips() -> None:
    for url in ("nbd://h:10809/e", "nbd://[::1]:5/e", "nbd+unix:///e?socket=/s", "nbd://h/a%20b%3Fc",
                "nbd+unix:///x%23y?socket=/tmp/a%26b"):
        assert parse_nbd_url(parse_nbd_url(url).describe()) == parse_nbd_url(url)
