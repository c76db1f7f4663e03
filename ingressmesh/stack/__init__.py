"""ingressmesh installed the swarm way: `ingressmesh-stack.yml` (a controller on every manager, an
agent on every node) deployed with `docker stack deploy`, the cluster secret as a Docker secret.

Stacks are a feature of the docker command line (the Engine API has no stack), so this drives
the `docker` binary; the secret is created only when missing (Docker never gives a secret back,
so the same token is kept in a file on the manager for `ingressmesh show` and friends).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass

from ..daemon.token import generate_token, load_token, write_token

STACK_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ingressmesh-stack.yml")
L7_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ingressmesh-l7.yml")
ACME_CA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ingressmesh-l7-acme-ca.yml")
SECRET = "ingressmesh_secret"
DIGEST_LABEL = "io.ingressmesh.token.sha256"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_IMAGE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_./:@-]{0,254}$")


class StackError(RuntimeError):
    """A bad setting, or a docker command that failed (its message is kept)."""


@dataclass(frozen=True)
class StackSettings:
    name: str = "ingressmesh"
    image: str = "ingressmesh/proxy:latest"
    backend: str = "auto"
    on_stop: str = "handover"
    source_ip: str = "snat"                     # every agent's --source-ip (plan_source_ip.py)
    docker_sock: str = "/var/run/docker.sock"  # on every node; may hold {{.Node.Hostname}}
    exec_root: str = "/run/docker"              # dockerd's --exec-root on every node
    resolve_image: str = "always"               # "never" where no registry holds the image (the lab)
    l7_config: str = ""                         # an l7.toml: the L7 layer joins the stack
    tls_dir: str = ""                           # https between agents and controllers (stack/tls.py)

    def check(self) -> "StackSettings":
        if not _NAME.match(self.name):
            raise StackError(f"stack name {self.name!r}: letters, digits, _ . - (at most 63)")
        if not _IMAGE.match(self.image):
            raise StackError(f"image {self.image!r} is not an image reference")
        if self.backend not in ("auto", "nftables", "ipvs"):
            raise StackError(f"backend {self.backend!r}: auto, nftables or ipvs")
        if self.source_ip not in ("snat", "preserve"):
            raise StackError(f"source-ip {self.source_ip!r}: snat or preserve")
        if self.on_stop not in ("handover", "keep"):
            raise StackError(f"on-stop {self.on_stop!r}: handover or keep (cleanup would remove the rules a "
                             "start-first update's new agent has just written)")
        if self.resolve_image not in ("always", "changed", "never"):
            raise StackError(f"resolve-image {self.resolve_image!r}: always, changed or never")
        for what, path in (("docker socket", self.docker_sock), ("exec root", self.exec_root)):
            if not path.startswith("/") or any(c in path for c in "\n\r\0,"):
                raise StackError(f"{what} {path!r} must be an absolute path (no commas or newlines)")
        if self.tls_dir and not self.tls_dir.startswith("/"):
            raise StackError(f"tls dir {self.tls_dir!r} must be an absolute path")
        if self.l7_config:
            from ..l7.settings import SettingsError, load
            try:
                load(self.l7_config)  # refused by name here, before anything is deployed
                ca_bundle = self.acme_ca_bundle()
            except SettingsError as err:
                raise StackError(str(err)) from None
            if ca_bundle and not os.path.isfile(ca_bundle):
                raise StackError(f"{self.l7_config}: ACME.CABundle {ca_bundle!r}: no such file here (install "
                                 "reads it and gives it to the l7 task as a Docker config)")
        return self

    def acme_ca_bundle(self) -> str:
        """l7.toml's [ACME] CABundle ("" when none): the stack mounts it into the l7 task."""
        from ..l7.acme_settings import load as load_acme
        acme = load_acme(self.l7_config) if self.l7_config else None
        return acme.ca_bundle if acme is not None else ""

    def files(self) -> list[str]:
        from .tls import L7_TLS_FILE, TLS_FILE
        files = [STACK_FILE] + ([L7_FILE] if self.l7_config else []) + ([TLS_FILE] if self.tls_dir else [])
        files += [ACME_CA_FILE] if self.acme_ca_bundle() else []
        return files + ([L7_TLS_FILE] if self.l7_config and self.tls_dir else [])

    def environment(self) -> dict[str, str]:
        """What `docker stack deploy` substitutes into the stack files."""
        env = {"INGRESSMESH_IMAGE": self.image, "INGRESSMESH_BACKEND": self.backend,
               "INGRESSMESH_ON_STOP": self.on_stop, "INGRESSMESH_SOURCE_IP": self.source_ip,
               "DOCKER_SOCK": self.docker_sock,
               "DOCKER_EXEC_ROOT": self.exec_root, "INGRESSMESH_STACK_NAME": self.name}
        if self.l7_config:
            with open(self.l7_config, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()[:12]
            env.update(INGRESSMESH_L7_CONFIG=os.path.abspath(self.l7_config), INGRESSMESH_L7_CONFIG_HASH=digest)
            ca_bundle = self.acme_ca_bundle()
            if ca_bundle:
                with open(ca_bundle, "rb") as handle:
                    env.update(INGRESSMESH_ACME_CA=ca_bundle,
                               INGRESSMESH_ACME_CA_HASH=hashlib.sha256(handle.read()).hexdigest()[:12])
        if self.tls_dir:
            from .tls import files_hash
            env["INGRESSMESH_TLS_HASH"] = files_hash(self.tls_dir)
        return env


def _docker(docker: list[str], *args: str, stdin: str | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*docker, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise StackError(f"{docker[0]}: no docker command line here (apt-get install docker.io)") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"docker {' '.join(args[:3])} did not answer in {timeout:g} s") from None


def cluster_token(token_file: str) -> tuple[str, bool]:
    """The cluster secret kept in `token_file`, made (0600) if the file does not exist; (token, made)."""
    if os.path.exists(token_file):
        return load_token(token_file), False
    os.makedirs(os.path.dirname(os.path.abspath(token_file)), mode=0o700, exist_ok=True)
    token = generate_token()
    write_token(token_file, token)
    return token, True


def secret_digest(docker: list[str]) -> str | None:
    """The token digest labelled on the existing Docker secret ("" when it has none: made by hand),
    or None when there is no such secret."""
    shown = _docker(docker, "secret", "inspect", "-f", f'{{{{index .Spec.Labels "{DIGEST_LABEL}"}}}}', SECRET)
    if shown.returncode != 0:
        return None
    return shown.stdout.strip().removeprefix("<no value>")


def token_digest(token: str) -> str:
    """Names a token without revealing it (32 random bytes: the hash gives nothing away)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def ensure_secret(docker: list[str], token: str, token_file: str = "the token file") -> bool:
    """Create the Docker secret from `token` unless it exists (True when created); an existing one
    must hold the same token, or every `--token-file` on this manager would be refused."""
    digest = secret_digest(docker)
    if digest is None:
        made = _docker(docker, "secret", "create", "--label", f"{DIGEST_LABEL}={token_digest(token)}", SECRET, "-",
                       stdin=token)
        if made.returncode != 0:
            raise StackError(f"docker secret create {SECRET}: {made.stderr.strip()}")
        return True
    if digest and digest != token_digest(token):
        raise StackError(f"the Docker secret {SECRET} holds another token than {token_file}: copy the token file "
                         f"from the manager that installed the stack, or start over (docker stack rm, then "
                         f"docker secret rm {SECRET})")
    return False


def deploy(docker: list[str], settings: StackSettings) -> str:
    """`docker stack deploy` of the stack file with these settings; docker's output."""
    settings.check()
    files = [arg for path in settings.files() for arg in ("-c", path)]
    done = _docker(docker, "stack", "deploy", "--resolve-image", settings.resolve_image, *files,
                   settings.name, env=settings.environment(), timeout=300)
    if done.returncode != 0:
        raise StackError(f"docker stack deploy {settings.name}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def manager_addresses(docker: list[str]) -> list[str]:
    """Every manager's address (host part of its swarm address): what the agents dial."""
    listed = _docker(docker, "node", "ls", "--filter", "role=manager", "--format", "{{.ID}}")
    if listed.returncode != 0:
        raise StackError(f"docker node ls: {listed.stderr.strip()} (run it on a manager)")
    addresses = []
    for node in listed.stdout.split():
        shown = _docker(docker, "node", "inspect", "-f", "{{.ManagerStatus.Addr}}", node)
        if shown.returncode != 0 or not shown.stdout.strip():
            raise StackError(f"docker node inspect {node}: no manager address ({shown.stderr.strip()})")
        addresses.append(shown.stdout.strip().rsplit(":", 1)[0].strip("[]"))
    return addresses


def ensure_tls_secrets(docker: list[str], settings: StackSettings) -> list[str]:
    """The CA and controller certificate in settings.tls_dir (made or renewed for the managers
    there now), and their Docker secrets (labelled with the stack: `docker stack rm` removes
    them); the secrets made now."""
    from .tls import FILES, TlsSetupError, ensure_files, files_hash, secret_names
    try:
        ensure_files(settings.tls_dir, manager_addresses(docker))
    except (TlsSetupError, OSError) as err:
        raise StackError(f"TLS files in {settings.tls_dir}: {err}") from None
    made = []
    for part, name in secret_names(files_hash(settings.tls_dir)).items():
        if _docker(docker, "secret", "inspect", "-f", "{{.ID}}", name).returncode == 0:
            continue
        done = _docker(docker, "secret", "create", "--label", f"com.docker.stack.namespace={settings.name}", name,
                       os.path.join(settings.tls_dir, FILES[part]))
        if done.returncode != 0:
            raise StackError(f"docker secret create {name}: {done.stderr.strip()}")
        made.append(name)
    return made
