"""The department model service (``medseg serve``): the worker protocol's runs over HTTP, on Ray Serve.

Thin reading-room workstations send a volume once and then only boxes; the models and MedSAM's embedding cache stay
warm on the server, one GPU or several machines behind one address.

Design: **one named Ray actor per session, behind a stateless Serve ingress** (FastAPI), rather than Serve's
model multiplexing keyed by session. A session's state (its volume, its loaded models, MedSAM's embedding cache)
must live in exactly one place: multiplexing routes by *preference* only - measured with Ray 2.60 on a 2-core
machine, 12 back-to-back requests right after an id was first seen landed on both replicas, each building its own
copy, and a busy replica is skipped. A named actor is addressed directly (``ray.get_actor``: 6.4 ms median, an HTTP
request through Serve 8.2 ms on loopback), so every request of a session reaches its state, with no copy and no
rebuild; the 100 ms re-prompt budget goes to the decoder and the payload.

* :mod:`.codec` - arrays in one HTTP body (zlib), bounded decoding;
* :mod:`.tokens` - users' bearer tokens, stored hashed (``medseg serve-token``);
* :mod:`.session` - a session (volume, engines, runs through the worker's ``Handlers``), idle expiry;
* :mod:`.app` - the Serve ingress: routes, authentication, ownership, size limits, one-line errors;
* :mod:`.client` - the HTTP client with the local worker client's interface (requests + numpy only).

Sessions: a session's actor reserves ``--session-cpus`` / ``--session-gpus`` (and ``--session-memory-mb`` of Ray's
memory resource), so a machine holds as many live sessions as it has room for and Ray places new ones on any machine
of the cluster; a session idle for ``--idle-minutes`` (default 15) ends and frees everything; an actor that dies
(its machine, out of memory) costs its session one "session lost: open it again" error, and the client's next run
opens a new one. Ray and FastAPI are the optional extra ``medseg-backend[serve]``; importing this package (and the
client) needs neither.
"""
