"""The routed host of an IPv6 Host header is the bracketed literal, not '[' (review of issue 19):
the port is cut at the last ':' followed only by digits, never at the first ':'."""
import re

import pytest

from ingressmesh.l7 import render, slots
from ingressmesh.l7.render import HOST_EXPR, ProxySettings, render_config
from ingressmesh.l7.routes import RouteTable


def routed_host(header: str) -> str:
    """HOST_EXPR's converters, step by step, with Python's re (HAProxy's regsub is PCRE here)."""
    steps = re.findall(r"regsub\('([^']*)',''\)|(lower)", HOST_EXPR)
    value = header
    for pattern, lower in steps:
        value = value.lower() if lower else re.sub(pattern, "", value)
    return value


@pytest.mark.parametrize("header, host", [("[::1]", "[::1]"), ("[::1]:80", "[::1]"), ("[FE80::1]:8080", "[fe80::1]"),
                                          ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"), ("Demo.Local.:80", "demo.local"),
                                          ("demo.local", "demo.local"), ("10.0.0.1:80", "10.0.0.1")])
def test_the_routed_host_keeps_an_ipv6_literal_whole(header, host):
    assert re.fullmatch(render.VALID_HOST, header, re.I)
    assert routed_host(header) == host


def test_the_config_sets_the_host_with_that_expression():
    table = RouteTable()
    text = render_config(table, slots.assign({}, table), ProxySettings())
    assert f"    http-request set-var(txn.host) {HOST_EXPR}\n" in text and "field(1,:)" not in text
