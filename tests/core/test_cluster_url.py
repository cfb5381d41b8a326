"""Redis Cluster URLs: seed nodes, password and TLS from redis+cluster:// and rediss+cluster://."""

from __future__ import annotations

import pytest

from core.cluster_url import parse_cluster_url


def test_seed_nodes_in_order_without_password_or_tls():
    nodes, password, ssl = parse_cluster_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001,redis-c.internal:7002")

    assert nodes == [("127.0.0.1", 7000), ("127.0.0.1", 7001), ("redis-c.internal", 7002)]
    assert password is None
    assert ssl is False


def test_rediss_cluster_is_tls():
    assert parse_cluster_url("rediss+cluster://cache.example.com:6380").ssl is True
    assert parse_cluster_url("REDISS+CLUSTER://cache.example.com:6380").ssl is True


def test_a_host_without_a_port_takes_6379():
    assert parse_cluster_url("redis+cluster://a,b:7000").nodes == [("a", 6379), ("b", 7000)]


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis+cluster://:s3cret@a:7000", "s3cret"),
        ("redis+cluster://default:s3cret@a:7000", "s3cret"),
        ("redis+cluster://:p%40ss%3Aw%2Fd@a:7000", "p@ss:w/d"),  # percent-encoded
        ("redis+cluster://:p@ss@a:7000", "p@ss"),  # the last @ ends the password
        ("redis+cluster://default@a:7000", None),
        ("redis+cluster://:@a:7000", None),
    ],
)
def test_password_and_the_default_user(url, password):
    parsed = parse_cluster_url(url)

    assert parsed.password == password
    assert parsed.nodes == [("a", 7000)]


def test_another_user_is_refused_without_showing_the_password():
    with pytest.raises(ValueError, match="only the default user") as error:
        parse_cluster_url("redis+cluster://kestrel:s3cret@a:7000")

    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        ("redis+cluster://[::1]:7000,[fd00::2]", [("::1", 7000), ("fd00::2", 6379)]),
        ("rediss+cluster://:pw@[2001:db8::5]:6380/", [("2001:db8::5", 6380)]),
    ],
)
def test_ipv6_addresses_in_brackets(url, nodes):
    assert parse_cluster_url(url).nodes == nodes


@pytest.mark.parametrize("tail", ["", "/", "/0", "?ssl_cert_reqs=required", "/0?socket_timeout=2&x=1"])
def test_database_zero_and_options_are_accepted(tail):
    assert parse_cluster_url(f"redis+cluster://a:7000{tail}").nodes == [("a", 7000)]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://a:6379", "starts with redis\\+cluster://"),
        ("a:7000,b:7001", "starts with redis\\+cluster://"),
        ("redis+sentinel://a:26379/mymaster", "starts with redis\\+cluster://"),
        ("redis+cluster://", "names no node"),
        ("redis+cluster://:pw@/", "names no node"),
        ("redis+cluster://a:7000,,b:7001", "'' is not host:port"),
        ("redis+cluster://a:7000,", "'' is not host:port"),
        ("redis+cluster://a b:7000", "is not host:port"),
        ("redis+cluster://a:", "port must be a number"),
        ("redis+cluster://a:port", "port must be a number"),
        ("redis+cluster://a:0", "port must be a number"),
        ("redis+cluster://a:65536", "port must be a number"),
        ("redis+cluster://a:७०००", "port must be a number"),  # digits, but not ASCII ones
        ("redis+cluster://::1:7000", "goes in brackets"),
        ("redis+cluster://[::1:7000", "closing bracket"),
        ("redis+cluster://[not-v6]:7000", "not an IPv6 address"),
        ("redis+cluster://[::1]7000", "only :port may follow"),
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis+cluster://a:7000/0/x", "only database 0"),
        ("redis+cluster://a:7000#frag", "no #fragment"),
    ],
)
def test_a_malformed_url_is_a_value_error_saying_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)


def test_a_malformed_url_error_does_not_show_the_password():
    with pytest.raises(ValueError, match="port must be a number") as error:
        parse_cluster_url("redis+cluster://:s3cret@a:x")

    assert "s3cret" not in str(error.value)
