"""The proxy services' settings: a TOML file shaped like Interlock's `config.toml`.

Each `[Extensions.<name>]` table is one proxy service (one service cluster), with Interlock's
key names where they mean the same thing (README "Proxy service options" has the mapping):

    [Extensions.default]
    ProxyServiceName = "ingressmesh-proxy"
    ProxyImage = "imlab/proxy:latest"
    ProxyReplicas = 2
    PublishMode = "ingress"          # or "host"
    PublishedPort = 8080
    PublishedSSLPort = 8443          # HTTPS (TLS hosts, SNI passthrough); leave out for none
    ServiceCluster = ""
    ProxyConstraints = ["node.role==worker"]
    ProxyUpdateDelay = "1s"
    ProxyStopGracePeriod = "30s"
    Controllers = ["https://10.0.0.1:9401"]
    ControllerCASecret = "ingressmesh_ca"   # a Docker secret: the CA of the controller's TLS certificate
    ProxySecrets = ["demo_demo.local.cert", "demo_demo.local.key"]  # secrets labels may mount (secret_policy.py)
    RoutingNetwork = "ingressmesh-routing"  # an overlay the proxies are always on (stacks join it as external)
    SourceIP = "preserve"            # label io.ingressmesh.lb.source_ip on the proxy service (ingress mode:
                                     # the proxies see the client's own address); leave out for the agent's default
    AcceptProxyProtocol = false      # true: every connection to the published ports opens with a PROXY header
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace

from . import grammar

_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)(ms|s|m)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.\-]+ *(==|!=) *[A-Za-z0-9_.\-:/]+$")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")
_SECRET_PATTERN = re.compile(r"^[A-Za-z0-9_.*?-]{1,64}$")  # a secret name, with shell-style * and ?
MIN_PATTERN_LITERALS = 3  # a pattern with wildcards names at least this many characters that are not * or ?


class SettingsError(ValueError):
    """A bad settings file; the message names the extension and the key."""


@dataclass(frozen=True)
class ProxyServiceSettings:
    name: str = "ingressmesh-proxy"
    image: str = "imlab/proxy:latest"
    replicas: int = 2
    publish_mode: str = "ingress"
    published_port: int = 8080
    published_ssl_port: int = 0  # 0: no HTTPS port
    service_cluster: str = ""
    constraints: tuple[str, ...] = ()
    update_delay: float = 1.0
    stop_grace_period: float = 30.0
    controllers: tuple[str, ...] = ()
    token_secret: str = "ingressmesh_token"
    ca_secret: str = ""  # Docker secret with the controller's CA: proxies verify an https controller
    proxy_secrets: tuple[str, ...] = ()  # name patterns of the secrets labels may mount (secret_policy.py)
    routing_network: str = ""  # an overlay network the proxies are always attached to ("": none)
    source_ip: str = ""  # "preserve" or "snat": the proxy service's io.ingressmesh.lb.source_ip ("": not set)
    accept_proxy: bool = False  # the proxies' published ports take a PROXY header (an L4 balancer in front)


_KEYS = {"ProxyServiceName": "name", "ProxyImage": "image", "ProxyReplicas": "replicas",
         "PublishMode": "publish_mode", "PublishedPort": "published_port", "PublishedSSLPort": "published_ssl_port", "ServiceCluster": "service_cluster",
         "ProxyConstraints": "constraints", "ProxyUpdateDelay": "update_delay",
         "ProxyStopGracePeriod": "stop_grace_period", "Controllers": "controllers", "TokenSecret": "token_secret",
         "ControllerCASecret": "ca_secret", "ProxySecrets": "proxy_secrets", "RoutingNetwork": "routing_network",
         "SourceIP": "source_ip", "AcceptProxyProtocol": "accept_proxy"}


def _duration(where: str, value) -> float:
    found = _DURATION.fullmatch(str(value))
    if not found:
        raise SettingsError(f"{where}: {value!r} is not a duration like 500ms, 2s or 1m")
    return float(found.group(1)) * _UNITS[found.group(3)]


def _check_pattern(where: str, pattern: str) -> None:
    """A pattern that is (nearly) all wildcards would hand every secret in the swarm (other teams'
    passwords) to the internet-facing proxies: refused when l7.toml is loaded."""
    literals = sum(1 for c in pattern if c not in "*?")
    if literals != len(pattern) and literals < MIN_PATTERN_LITERALS:
        raise SettingsError(f"{where}: pattern {pattern!r} admits nearly every secret (fewer than "
                            f"{MIN_PATTERN_LITERALS} characters besides * and ?): name the secrets exactly, "
                            "or create them with the label io.ingressmesh.l7.secret=true")


def _check(where: str, key: str, value):
    try:
        if key == "name" or key == "token_secret":
            return grammar.name(where, str(value))
        if key in ("ca_secret", "routing_network"):
            return grammar.name(where, value) if value else ""
        if key == "service_cluster":
            return grammar.name(where, value) if value else ""
        if key == "image":
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-/:@]{0,254}", value):
                raise SettingsError(f"{where}: {value!r} is not an image reference")
            return value
        if key == "replicas":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise SettingsError(f"{where}: {value!r} is not a number of replicas (0-100)")
            return value
        if key == "published_ssl_port":
            return grammar.port(where, str(value)) if not isinstance(value, bool) else grammar.port(where, "x")
        if key == "published_port":
            return grammar.port(where, str(value)) if not isinstance(value, bool) else grammar.port(where, "x")
        if key == "source_ip":
            return grammar.choice(where, str(value), ("preserve", "snat"))
        if key == "accept_proxy":
            if not isinstance(value, bool):
                raise SettingsError(f"{where}: {value!r} is not true or false")
            return value
        if key == "publish_mode":
            return grammar.choice(where, str(value), ("ingress", "host"))
        if key in ("update_delay", "stop_grace_period"):
            return _duration(where, value)
        if key == "proxy_secrets":
            if not isinstance(value, list) or not all(isinstance(v, str) and _SECRET_PATTERN.fullmatch(v) for v in value):
                raise SettingsError(f"{where}: expected a list of secret names or patterns like 'demo.local.*'")
            for pattern in value:
                _check_pattern(where, pattern)
            return tuple(value)
        if key in ("constraints", "controllers"):
            pattern = _CONSTRAINT if key == "constraints" else _URL
            if not isinstance(value, list) or not all(isinstance(v, str) and pattern.fullmatch(v) for v in value):
                raise SettingsError(f"{where}: expected a list of {'constraints like node.role==worker' if key == 'constraints' else 'http(s)://host:port URLs'}")
            return tuple(value)
    except grammar.LabelError as err:
        raise SettingsError(f"{where}: {err.reason}") from None
    raise SettingsError(f"{where}: unknown key")


def parse(text: str, source: str = "l7 config") -> tuple[ProxyServiceSettings, ...]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{source}: not valid TOML: {err}") from None
    extensions = data.get("Extensions")
    if not isinstance(extensions, dict) or not extensions:
        raise SettingsError(f"{source}: expected at least one [Extensions.<name>] table")
    found, names, clusters = [], set(), set()
    for ext, table in extensions.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{source}: Extensions.{ext} is not a table")
        values = {}
        for key, value in table.items():
            if key not in _KEYS:
                raise SettingsError(f"{source}: Extensions.{ext}.{key}: unknown key (known: {', '.join(_KEYS)})")
            values[_KEYS[key]] = _check(f"{source}: Extensions.{ext}.{key}", _KEYS[key], value)
        values.setdefault("name", "ingressmesh-proxy" if ext == "default" else f"ingressmesh-proxy-{ext}")
        settings = ProxyServiceSettings(**values)
        if settings.name in names or settings.service_cluster in clusters:
            raise SettingsError(f"{source}: Extensions.{ext}: another extension has the same "
                                "ProxyServiceName or ServiceCluster")
        names.add(settings.name)
        clusters.add(settings.service_cluster)
        found.append(settings)
    return tuple(found)


def load(path: str) -> tuple[ProxyServiceSettings, ...]:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read(), path)
    except OSError as err:
        raise SettingsError(f"{path}: {err.strerror or err}") from None


def with_default_ca_secret(settings: tuple[ProxyServiceSettings, ...], ca_secret: str
                           ) -> tuple[ProxyServiceSettings, ...]:
    """The stack with --tls names its CA secret once (`l7 deploy --proxy-ca-secret`): every proxy
    service that l7.toml gives no ControllerCASecret gets it, so its proxies verify the controllers."""
    ca_secret = _check("--proxy-ca-secret", "ca_secret", ca_secret)  # refused by name like the file's
    return tuple(replace(item, ca_secret=item.ca_secret or ca_secret) for item in settings)
