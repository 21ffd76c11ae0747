"""The HTTP side of the service: a stateless Ray Serve ingress (FastAPI) in front of one named actor per session.

Every request carries ``Authorization: Bearer TOKEN`` (checked against the token file, :mod:`.tokens`). A
session's actor is named after its owner and its id (:func:`actor_name`), so a user can only ever look up their
own sessions: another user's session id is simply not found (404), exactly like an unknown one.

Routes (prefix ``/v1``; bodies of arrays use :mod:`.codec`)::

    GET    /hello                               who am I, server version, limits (the panel's Test connection)
    GET    /sessions                            my open sessions
    POST   /sessions                            open a session: body {"volume"} -> {"session", "shape", "dtype"}
    DELETE /sessions/{sid}                      close it (volume, models and any spooled file go)
    POST   /sessions/{sid}/jobs                 a run: body meta {"op", "params"} + its arrays -> {"job"}
    GET    /sessions/{sid}/jobs/{jid}/events    ?after=N&wait=S -> {"events": [...], "ended"} (long poll)
    GET    /sessions/{sid}/jobs/{jid}/result    the finished run's arrays (collected once)
    POST   /sessions/{sid}/jobs/{jid}/cancel
    DELETE /sessions/{sid}/jobs/{jid}           forget a run (its late result is dropped)

Errors are one JSON line ``{"detail": "..."}``: 401 bad or missing token, 404 unknown (or another user's)
session or run, 410 session lost (its actor died: open it again), 413 upload over the limit, 400 malformed run,
503 no room for another session. Nothing is changed by a refused request.
"""
# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations (Request, int) at run time.

import asyncio
import hashlib
import logging
import re
import secrets
from typing import Any, Dict

from ..errors import InputError
from . import codec
from .session import SERVICE_OPS, Session

log = logging.getLogger("medseg_backend.service")

NAMESPACE = "medseg-service"
APP_NAME = "medseg"
#: Ray's resource of the head node (ray/_common/constants.py HEAD_NODE_RESOURCE_NAME; Ray pins its own state actors
#: with it the same way).
HEAD_RESOURCE = "node:__internal_head__"
SID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

#: Defaults of ``medseg serve`` (see :func:`make_config`).
DEFAULTS: Dict[str, Any] = {
    "tokens": None, "max_upload_bytes": 1024 * 2 ** 20, "idle_s": 900.0, "session_cpus": 1.0, "session_gpus": 0.0,
    "session_memory_bytes": 0, "cache_mb": 1024, "spool": None, "open_timeout_s": 60.0,
}


def make_config(**values) -> Dict[str, Any]:
    config = dict(DEFAULTS)
    config.update({k: v for k, v in values.items() if v is not None})
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown service settings: {sorted(unknown)}")
    return config


def actor_name(user: str, sid: str) -> str:
    """The Ray actor name of ``user``'s session ``sid`` (the user's part is a hash: names are listable)."""
    return f"s-{hashlib.sha256(user.encode('utf-8')).hexdigest()[:16]}-{sid}"


def _message(exc: BaseException) -> str:
    """The one-line message of an error raised in a session actor (Ray wraps it with the actor's traceback)."""
    cause = getattr(exc, "cause", None)
    text = str(cause if isinstance(cause, BaseException) else exc).strip()
    return (text.splitlines() or [""])[-1][:500]


def build_app(config: Dict[str, Any], replicas: int = 1):
    """The Serve application (an ingress deployment bound to ``config``); imports Ray and FastAPI."""
    import ray
    from fastapi import FastAPI, HTTPException, Request, Response
    from ray import serve
    from ray.exceptions import GetTimeoutError, RayActorError

    from .. import __version__
    from ..worker.protocol import PROTOCOL_VERSION
    from .tokens import TokenStore

    api = FastAPI(title="MedSeg model service", docs_url=None, redoc_url=None, openapi_url=None)
    SessionActor = ray.remote(Session)

    # The ingress stays on the head node (where `medseg serve` runs and the token file is); sessions go anywhere.
    @serve.deployment(name="ingress", ray_actor_options={"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.001}})
    @serve.ingress(api)
    class Ingress:
        def __init__(self, cfg: Dict[str, Any]) -> None:
            self.cfg = dict(cfg)
            self.tokens = TokenStore(cfg["tokens"])
            self.limit = int(cfg["max_upload_bytes"])
            self.handles: Dict[str, Any] = {}

        # ------------------------------------------------------------------------------------------ helpers --
        def _user(self, request: Request) -> str:
            auth = request.headers.get("authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            try:
                user = self.tokens.user_for(token)
            except InputError as exc:
                log.error("%s", exc)
                user = None
            if user is None:
                raise HTTPException(401, "Bad or missing token: ask the server's admin for one ('medseg serve-token "
                                         "add USER') and enter it in the MedSeg panel.",
                                    headers={"WWW-Authenticate": "Bearer"})
            return user

        def _handle(self, user: str, sid: str):
            if not SID_RE.match(sid):
                raise HTTPException(404, f"Session {sid[:64]!r} not found (closed, expired or never opened): open it "
                                         "again.")
            name = actor_name(user, sid)
            handle = self.handles.get(name)
            if handle is None:
                try:
                    handle = ray.get_actor(name, namespace=NAMESPACE)
                except ValueError:
                    raise HTTPException(404, f"Session {sid} not found (closed, expired after "
                                             f"{self.cfg['idle_s'] / 60:.0f} min idle, or lost): open it again.") \
                        from None
                if len(self.handles) > 1000:      # handles of sessions that ended elsewhere: look them up again
                    self.handles.clear()
                self.handles[name] = handle
            return name, handle

        async def _call(self, user: str, sid: str, method: str, *args):
            name, handle = self._handle(user, sid)
            try:
                return await getattr(handle, method).remote(*args)
            except RayActorError:
                self.handles.pop(name, None)
                raise HTTPException(410, "Session lost on the model server (its worker stopped: restarted, out of "
                                         "memory or expired): nothing was written; run again to open a new "
                                         "session.") from None
            except codec.UploadTooLarge as exc:
                raise HTTPException(413, _message(exc)) from None
            except InputError as exc:
                raise HTTPException(400, _message(exc)) from None
            except LookupError as exc:
                raise HTTPException(404, _message(exc)) from None

        async def _body(self, request: Request) -> bytes:
            length = request.headers.get("content-length")
            too_big = HTTPException(413, f"Upload too large: the server takes at most {self.limit / 2 ** 20:.0f} MB "
                                         "per request; crop the volume (or ask the admin to raise --max-upload-mb).")
            if length is not None and length.isdigit() and int(length) > self.limit:
                raise too_big
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.limit:
                    raise too_big
                chunks.append(chunk)
            return b"".join(chunks)

        # ------------------------------------------------------------------------------------------- routes --
        @api.get("/v1/hello")
        async def hello(self, request: Request):
            user = self._user(request)
            return {"user": user, "server": f"medseg {__version__}", "protocol": PROTOCOL_VERSION,
                    "ops": list(SERVICE_OPS), "max_upload_bytes": self.limit, "idle_s": self.cfg["idle_s"]}

        @api.get("/v1/sessions")
        async def sessions(self, request: Request):
            user = self._user(request)
            prefix = actor_name(user, "")
            names = [a["name"] if isinstance(a, dict) else str(a)
                     for a in ray.util.list_named_actors(all_namespaces=True)
                     if not isinstance(a, dict) or a.get("namespace") == NAMESPACE]
            return {"sessions": sorted(n[len(prefix):] for n in names if n.startswith(prefix))}

        @api.post("/v1/sessions")
        async def open_session(self, request: Request):
            user = self._user(request)
            body = await self._body(request)
            sid = secrets.token_urlsafe(18)
            opts: Dict[str, Any] = dict(name=actor_name(user, sid), namespace=NAMESPACE, lifetime="detached",
                                        num_cpus=float(self.cfg["session_cpus"]),
                                        num_gpus=float(self.cfg["session_gpus"]), max_concurrency=16, max_restarts=0)
            if self.cfg["session_memory_bytes"]:
                opts["memory"] = int(self.cfg["session_memory_bytes"])
            handle = SessionActor.options(**opts).remote(user, sid, self.cfg)
            try:
                out = await asyncio.wait_for(asyncio.wrap_future(handle.open.remote(body).future()),
                                             self.cfg["open_timeout_s"])
            except asyncio.TimeoutError:
                ray.kill(handle, no_restart=True)
                raise HTTPException(503, f"No room for another session: the server's workers are all in use "
                                         f"(waited {self.cfg['open_timeout_s']:.0f} s); close a session or try again "
                                         "in a minute.") from None
            except (InputError, GetTimeoutError) as exc:
                ray.kill(handle, no_restart=True)
                code = 413 if isinstance(exc, codec.UploadTooLarge) else 400
                raise HTTPException(code, _message(exc)) from None
            except RayActorError:
                raise HTTPException(503, "The session's worker could not start (out of memory?): try again; nothing "
                                         "was kept.") from None
            self.handles[actor_name(user, sid)] = handle
            return out

        @api.delete("/v1/sessions/{sid}")
        async def close_session(self, sid: str, request: Request):
            user = self._user(request)
            name, handle = self._handle(user, sid)
            try:
                await handle.close.remote()
            except RayActorError:
                pass
            ray.kill(handle, no_restart=True)
            self.handles.pop(name, None)
            return {"closed": sid}

        @api.post("/v1/sessions/{sid}/jobs")
        async def submit(self, sid: str, request: Request):
            user = self._user(request)
            self._handle(user, sid)            # 404 before reading a large body
            body = await self._body(request)
            return await self._call(user, sid, "submit", body)

        @api.get("/v1/sessions/{sid}/jobs/{jid}/events")
        async def events(self, sid: str, jid: int, request: Request, after: int = 0, wait: float = 0.0):
            user = self._user(request)
            return await self._call(user, sid, "events", jid, after, wait)

        @api.get("/v1/sessions/{sid}/jobs/{jid}/result")
        async def result(self, sid: str, jid: int, request: Request):
            user = self._user(request)
            data = await self._call(user, sid, "result", jid)
            return Response(content=data, media_type=codec.CONTENT_TYPE)

        @api.post("/v1/sessions/{sid}/jobs/{jid}/cancel")
        async def cancel(self, sid: str, jid: int, request: Request):
            user = self._user(request)
            return await self._call(user, sid, "cancel", jid)

        @api.delete("/v1/sessions/{sid}/jobs/{jid}")
        async def forget(self, sid: str, jid: int, request: Request):
            user = self._user(request)
            return await self._call(user, sid, "forget", jid)

    return Ingress.options(num_replicas=max(1, int(replicas))).bind(config)


def start(config: Dict[str, Any], host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          tls_cert: str = None, tls_key: str = None, blocking: bool = False):
    """Run the service on the initialised Ray (``ray.init`` first): Serve's HTTP proxy on ``host:port`` (HTTPS
    with ``tls_cert`` + ``tls_key``), ``replicas`` ingress replicas. Returns Serve's handle of the app."""
    from ray import serve

    http: Dict[str, Any] = {"host": host, "port": int(port)}
    if tls_cert or tls_key:
        http.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    serve.start(http_options=http)
    return serve.run(build_app(config, replicas), name=APP_NAME, route_prefix="/", blocking=blocking)


def close_all_sessions() -> int:
    """End every session actor of the service (``medseg serve`` stopping); returns how many."""
    import ray

    n = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if isinstance(entry, dict) and entry.get("namespace") == NAMESPACE:
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE), no_restart=True)
                n += 1
            except ValueError:
                pass
    return n
