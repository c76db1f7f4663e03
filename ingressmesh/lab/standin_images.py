"""Offline stand-ins for the images Interlock's documented examples run, under the same names, so
the examples run on the lab as written (no registry is reachable from it).  Built on each node of
a running lab FROM the lab's python image: one small layer (interlock_apps.py and the
hostname_server.py it borrows from) and an ENTRYPOINT choosing the app, so a stack's `command:`
(the docs' `--tls-cert=… --tls-key=…`) reaches the app as arguments.  Docker's classic builder
needs no registry for a local base image; its cache makes a rebuild take well under a second."""
from __future__ import annotations

import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor

from .images import PATH_ENV, PYTHON_IMAGE

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("interlock_apps.py", "hostname_server.py")
APP_DIR = "/usr/local/lib/imlab"
# doc image name -> (app in interlock_apps.py, port it exposes)
STANDINS = {
    "ehazlett/docker-demo:latest": ("docker-demo", 8080),
    "ehazlett/websocket-chat:latest": ("websocket-chat", 8080),
    "ehazlett/interlock-default-app:latest": ("default-app", 80),
    "traefik/whoami:latest": ("whoami", 80),
}


class StandinError(RuntimeError):
    """A stand-in image could not be built on a node."""


def dockerfile(app: str, port: int) -> str:
    return (f"FROM {PYTHON_IMAGE}\nENV {PATH_ENV}\nCOPY {' '.join(SOURCES)} {APP_DIR}/\nEXPOSE {port}\n"
            f'ENTRYPOINT ["python3", "{APP_DIR}/interlock_apps.py", "{app}"]\nCMD []\n')


def context(app: str, port: int) -> bytes:
    """The build context (a tar in memory): the Dockerfile and the two sources."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = {"Dockerfile": dockerfile(app, port).encode()}
        for name in SOURCES:
            with open(os.path.join(HERE, name), "rb") as handle:
                files[name] = handle.read()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_on_node(lab, n: int) -> list[str]:
    """Every stand-in on node n (the classic builder, never pulling); the tags built."""
    client = lab.docker_client(n, timeout=300)
    try:
        for tag, (app, port) in STANDINS.items():
            try:
                client.images.build(fileobj=io.BytesIO(context(app, port)), custom_context=True, tag=tag,
                                    pull=False, rm=True, forcerm=True)
            except Exception as err:  # docker.errors.BuildError / APIError: name the image and node
                raise StandinError(f"node{n}: building stand-in {tag}: {err}") from err
    finally:
        client.close()
    return list(STANDINS)


def build(lab) -> dict[int, list[str]]:
    """The stand-ins on every node of the lab, the nodes in parallel."""
    with ThreadPoolExecutor(max_workers=len(lab.config.node_numbers)) as pool:
        return dict(zip(lab.config.node_numbers, pool.map(lambda n: build_on_node(lab, n), lab.config.node_numbers)))
