"""The JSON HTTP base on a real socket: routing, token auth, errors that name the problem."""
from __future__ import annotations

import logging
import socket

import pytest
import requests

from ingressmesh.daemon.http import HttpService

TOKEN = "t0ken-for-the-tests-0123456789"


def _echo(request):
    return 200, {"query": dict(request.query), "json": request.json}, None


def _boom(request):
    raise RuntimeError("handler bug")


@pytest.fixture
def service():
    svc = HttpService(("127.0.0.1", 0), {
        ("GET", "/healthz"): lambda r: (200, {"ok": True}, None),
        ("GET", "/metrics"): lambda r: (200, b"m 1\n", "text/plain"),
        ("GET", "/v1/echo"): _echo,
        ("POST", "/v1/echo"): _echo,
        ("GET", "/v1/boom"): _boom,
        ("POST", "/v1/empty"): lambda r: (204, None, None),
    }, TOKEN).start()
    yield svc
    svc.stop()


def _auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def test_unprotected_paths_need_no_token(service):
    assert requests.get(service.url + "/healthz", timeout=5).json() == {"ok": True}
    response = requests.get(service.url + "/metrics", timeout=5)
    assert response.text == "m 1\n" and response.headers["Content-Type"] == "text/plain"


def test_protected_routes_with_the_token(service):
    response = requests.post(service.url + "/v1/echo?a=1&a=2&b=", json={"x": [1]}, headers=_auth(), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"query": {"a": "2", "b": ""}, "json": {"x": [1]}}
    response = requests.post(service.url + "/v1/empty", headers=_auth(), timeout=5)
    assert response.status_code == 204 and response.content == b""


@pytest.mark.parametrize("headers, problem", [
    ({}, "missing bearer token"),
    (_auth("wrong-token-wrong-token"), "wrong bearer token"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed Authorization header"),
    ({"Authorization": "Bearer "}, "malformed Authorization header"),
])
def test_refused_without_the_right_token(service, headers, problem):
    for method, path in (("GET", "/v1/echo"), ("POST", "/v1/echo"), ("GET", "/v1/unknown")):
        response = requests.request(method, service.url + path, headers=headers, json={"x": 1}, timeout=5)
        assert response.status_code == 401, path
        assert problem in response.json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_malformed_json_is_named(service):
    response = requests.post(service.url + "/v1/echo", data=b"{not json", headers=_auth(), timeout=5)
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed JSON body")


def test_unknown_path_and_wrong_method(service):
    response = requests.get(service.url + "/nope", timeout=5)
    assert response.status_code == 404 and "/nope" in response.json()["error"]
    response = requests.post(service.url + "/healthz", timeout=5)
    assert response.status_code == 405 and "GET" in response.json()["error"]


def test_handler_exception_is_500_and_server_survives(service, caplog):
    with caplog.at_level(logging.ERROR):
        response = requests.get(service.url + "/v1/boom", headers=_auth(), timeout=5)
    assert response.status_code == 500 and "internal error" in response.json()["error"]
    assert "handler bug" in caplog.text
    assert requests.get(service.url + "/healthz", timeout=5).status_code == 200


def test_oversized_body_refused(service):
    response = requests.post(service.url + "/v1/echo", data=b"x" * ((1 << 20) + 1), headers=_auth(), timeout=5)
    assert response.status_code == 413


def test_keep_alive_and_stop_closes_open_connections(service):
    session = requests.Session()
    assert session.get(service.url + "/healthz", timeout=5).status_code == 200
    assert session.get(service.url + "/healthz", timeout=5).status_code == 200
    port = service.port
    service.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_protected_routes_need_a_token():
    with pytest.raises(ValueError, match="need a token"):
        HttpService(("127.0.0.1", 0), {("GET", "/v1/x"): _echo}, None)


def test_no_access_log_on_stderr(service, capfd):
    requests.get(service.url + "/healthz", timeout=5)
    requests.get(service.url + "/v1/echo", timeout=5)
    assert capfd.readouterr().err == ""
