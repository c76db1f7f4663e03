"""The filter itself: an aiohttp server on a unix socket that passes each allowed call to the
real dockerd's socket (the answer streamed back: `/events` and logs stay streams) and answers
every other with 403 naming the call, in Docker's own error shape ({"message": ...}) so the
Docker SDK and CLI show the reason."""
from __future__ import annotations

import logging
import os
from typing import Optional, Protocol

import aiohttp
from aiohttp import web

from .calls import Call, Refused

log = logging.getLogger(__name__)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
MAX_BODY = 4 * 1024 * 1024  # a service spec is a few KiB; image pushes and archives are not passed anyway


class Rules(Protocol):
    name: str

    async def check(self, call: Call, lookup) -> None: ...


class DockerFilter:
    def __init__(self, rules: Rules, upstream: str, listen: str, owner: Optional[tuple[int, int]] = None):
        """`upstream`: the real dockerd socket; `listen`: the filtered socket (made 0600, owned by
        `owner` (uid, gid) when given: the unprivileged user it is for)."""
        self.rules, self.upstream, self.listen, self.owner = rules, upstream, listen, owner
        self.session: Optional[aiohttp.ClientSession] = None
        self.runner: Optional[web.AppRunner] = None

    async def start(self) -> "DockerFilter":
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.upstream),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                             auto_decompress=False)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        if os.path.exists(self.listen):
            os.unlink(self.listen)  # a socket file left by an earlier run of this task
        old = os.umask(0o177)
        try:
            await web.UnixSite(self.runner, self.listen).start()
        finally:
            os.umask(old)
        if self.owner is not None:
            os.chown(self.listen, *self.owner)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def lookup(self, path: str) -> Optional[dict]:
        """GET `path` on the real dockerd (a rule's question, e.g. which service an id is)."""
        try:
            async with self.session.get("http://docker" + path) as answer:
                if answer.status == 404:
                    return None
                if answer.status != 200:
                    raise Refused(f"dockerd answered {answer.status} to GET {path}")
                found = await answer.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as err:
            raise Refused(f"cannot check it: GET {path} on dockerd: {err}") from None
        return found if isinstance(found, dict) else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        what = f"{request.method} {request.raw_path.split('?')[0][:200]}"
        try:
            call = Call.parse(request.method, request.raw_path, body)
            what = call.name()
            await self.rules.check(call, self.lookup)
        except Refused as err:
            message = f"docker-filter ({self.rules.name}): {what} refused: {err}"
            log.warning("%s", message)
            return web.json_response({"message": message}, status=403)
        try:
            return await self._forward(request, body)
        except aiohttp.ClientError as err:  # dockerd restarting: say so in Docker's shape, not a traceback
            return web.json_response({"message": f"docker-filter ({self.rules.name}): dockerd at {self.upstream}: "
                                                 f"{err}"}, status=502)

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self.session.request(request.method, "http://docker" + request.raw_path, data=body or None,
                                        headers=headers, allow_redirects=False) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP})
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
