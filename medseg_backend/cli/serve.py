"""``medseg serve`` (the department model service on Ray Serve) and ``medseg serve-token`` (its users' tokens).

Registered by :func:`medseg_backend.cli.build_parser` through :func:`register`. Ray Serve is the optional extra
``medseg-backend[serve]``; without it ``medseg serve`` says how to install it. See :mod:`medseg_backend.service`
and SERVER.md.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from ..errors import InputError, MedSegError

INSTALL_HINT = "pip install 'medseg-backend[serve]' (or: pip install 'ray[serve]>=2.9' requests)"


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="run the department model service (Ray Serve; Slicer's MedSeg panel connects to it)",
        description="Serve MedSAM / LiteMedSAM / UniverSeg runs over HTTP to MedSegSlicer clients: one session per "
                    "opened volume, kept warm on the server. Starts a local Ray unless --address names a cluster. "
                    "Needs the extra: pip install 'medseg-backend[serve]'. See SERVER.md.")
    p.add_argument("--tokens", required=True, help="the token file (made by 'medseg serve-token add USER'; mode 0600)")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. auto, or HEAD:6379); default: start one here")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: behind a reverse proxy; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="replicas of the HTTP ingress (stateless; default 1)")
    p.add_argument("--session-cpus", type=float, default=1.0, help="CPUs each session's worker reserves (default 1)")
    p.add_argument("--session-gpus", type=float, default=0.0,
                   help="GPUs each session's worker reserves, e.g. 0.25 to share a GPU by four (default 0: CPU)")
    p.add_argument("--session-memory-mb", type=int, default=0,
                   help="memory each session reserves in Ray's scheduler (default 0: not reserved)")
    p.add_argument("--cache-mb", type=int, default=1024, help="MedSAM embedding cache per session (default 1024)")
    p.add_argument("--idle-minutes", type=float, default=15.0,
                   help="a session idle this long is closed and its memory freed (default 15)")
    p.add_argument("--max-upload-mb", type=int, default=1024,
                   help="largest upload, and largest volume once decompressed (default 1024)")
    p.add_argument("--spool", help="keep uploaded volumes in files in this folder (memory-mapped; removed when the "
                                   "session ends). Default: nothing of a volume is written to disk")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM); or use a reverse proxy (SERVER.md)")
    p.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    p.set_defaults(func=cmd_serve)

    t = sub.add_parser("serve-token", help="issue, list and revoke the model service's user tokens",
                       description="Manage the users of 'medseg serve': a token per user, shown once, stored hashed "
                                   "(salted sha256) in a 0600 file. The running server reads changes at once.")
    t.add_argument("--tokens", required=True, help="the token file (created by 'add' when missing)")
    ts = t.add_subparsers(dest="action", metavar="ACTION")
    ts.required = True
    a = ts.add_parser("add", help="make a token for USER and print it (once)")
    a.add_argument("user")
    a.add_argument("--replace", action="store_true", help="replace USER's token (the old one stops working)")
    ts.add_parser("list", help="list the users (never their tokens)")
    r = ts.add_parser("revoke", help="remove USER's token (their next request is refused)")
    r.add_argument("user")
    t.set_defaults(func=cmd_token)


def cmd_token(args) -> int:
    from ..service.tokens import TokenStore

    store = TokenStore(args.tokens)
    if args.action == "add":
        token = store.add(args.user, replace=args.replace)
        print(token)
        print(f"token for '{args.user}' written (hashed) to {store.path}; give it to the user, it is not shown "
              "again", file=sys.stderr)
    elif args.action == "list":
        for row in store.users():
            print(f"{row['user']}\t{row['created']}")
    else:
        store.revoke(args.user)
        print(f"token of '{args.user}' revoked", file=sys.stderr)
    return 0


def _config(args):
    from ..service.app import make_config
    from ..service.tokens import TokenStore

    for name in ("replicas", "session_cpus", "idle_minutes", "max_upload_mb", "cache_mb"):
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} {getattr(args, name)}: give a number above 0.")
    if args.session_gpus < 0 or args.session_memory_mb < 0:
        raise InputError("--session-gpus / --session-memory-mb: give 0 or more.")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError("TLS needs both --tls-cert and --tls-key (or neither, behind a reverse proxy).")
    for path in (args.tls_cert, args.tls_key):
        if path and not os.path.isfile(path):
            raise InputError(f"TLS file {path} not found: give the PEM certificate and key files.")
    tokens = TokenStore(args.tokens)
    tokens.check_private()
    if not tokens.users():
        raise InputError(f"The token file {tokens.path} has no users: add one with 'medseg serve-token --tokens "
                         f"{tokens.path} add USER'.")
    spool = None
    if args.spool:
        spool = os.path.abspath(args.spool)
        os.makedirs(spool, mode=0o700, exist_ok=True)
        for name in os.listdir(spool):          # left by sessions of a server that was killed
            if name.startswith("medseg-") and name.endswith(".npy"):
                os.remove(os.path.join(spool, name))
    return make_config(tokens=tokens.path, max_upload_bytes=args.max_upload_mb * 2 ** 20,
                       idle_s=args.idle_minutes * 60.0, session_cpus=args.session_cpus,
                       session_gpus=args.session_gpus, session_memory_bytes=args.session_memory_mb * 2 ** 20,
                       cache_mb=args.cache_mb, spool=spool)


def cmd_serve(args) -> int:
    config = _config(args)               # every setting checked before Ray starts
    try:
        import ray
        from ray import serve
    except ImportError:
        raise MedSegError(f"medseg serve runs on Ray Serve, which is not installed: {INSTALL_HINT}.") from None
    from ..batch.runner import start_ray
    from ..service.app import close_all_sessions, start

    started = start_ray(None, args.address)
    scheme = "https" if args.tls_cert else "http"
    try:
        start(config, host=args.host, port=args.port, replicas=args.replicas, tls_cert=args.tls_cert,
              tls_key=args.tls_key)
        print(f"medseg serve: listening on {scheme}://{args.host}:{args.port} ({args.replicas} ingress replica(s), "
              f"sessions close after {args.idle_minutes:g} min idle); Ctrl-C stops", file=sys.stderr)
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        while not stop:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            close_all_sessions()       # sessions are detached actors: on a cluster they would outlive the service
            serve.shutdown()
        finally:
            if started:
                ray.shutdown()
    print("medseg serve: stopped", file=sys.stderr)
    return 0
