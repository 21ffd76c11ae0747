"""Where models run: on this computer (the local model worker, the default) or on a department model server
(``medseg serve``: a URL and the user's token). No Qt: the MedSeg panel's few widgets forward here.

:func:`active_client` is what the runs use (the Segmenter's job runner asks for it at every start): the shared
local worker client, or the :class:`~medseg_backend.service.client.ServiceClient` of the configured server. The
server's client has the worker client's interface, so effects, preview, progressive slices, cancel and Apply work
the same; in server mode Slicer needs no torch (the client uses requests and numpy only).
"""
from __future__ import annotations

import threading
from typing import Optional, Tuple

from medseg_backend.errors import InputError

from medseg_backend.worker import client as worker_client

MODE_LOCAL = "local"
MODE_SERVER = "server"
MODES = (MODE_LOCAL, MODE_SERVER)
SETTINGS_MODE = "MedSegSlicer/modelsRunOn"
SETTINGS_URL = "MedSegSlicer/serverURL"
SETTINGS_TOKEN = "MedSegSlicer/serverToken"

_server = None          # the ServiceClient while in server mode


def configure(mode: str, url: str = "", token: str = "") -> str:
    """Run models on this computer (``local``) or on the server at ``url`` with ``token`` (``server``); returns
    one line saying where. Checked before anything changes (InputError); the previous server's sessions close."""
    global _server
    if mode not in MODES:
        raise InputError(f"'{mode}' is not a place to run models: choose {' or '.join(MODES)}.")
    new = None
    if mode == MODE_SERVER:
        from medseg_backend.service.client import ServiceClient

        new = ServiceClient(url, token)        # checks the URL and the token's presence
        if _server is not None and (_server.url, _server.token) == (new.url, new.token):
            return describe()                  # unchanged: keep the open sessions
    old, _server = _server, new
    if old is not None:             # its sessions close in the background: the panel never waits on the network
        threading.Thread(target=_quiet_shutdown, args=(old,), name="medseg-server-close", daemon=True).start()
    return describe()


def _quiet_shutdown(client) -> None:
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001 - a server that is gone cannot hold our sessions either
        pass


def mode() -> str:
    return MODE_SERVER if _server is not None else MODE_LOCAL


def describe() -> str:
    if _server is None:
        return "Models run on this computer."
    return f"Models run on the server {_server.url}."


def active_client():
    """The client of the next run: the server's, or the shared local worker's."""
    return _server if _server is not None else worker_client.shared_client()


class ConnectionCheck:
    """Test connection without waiting: the check runs in a thread; :attr:`result` is None until the server has
    answered (or the check failed), then ``(ok, one line)``. The panel polls it from a timer."""

    def __init__(self, url: str, token: str) -> None:
        self.result: Optional[Tuple[bool, str]] = None
        self._thread = threading.Thread(target=self._run, args=(url, token), name="medseg-server-check", daemon=True)
        self._thread.start()

    def _run(self, url: str, token: str) -> None:
        try:
            self.result = check_connection(url, token)
        except Exception as exc:  # noqa: BLE001 - the answer is one line in the panel, whatever went wrong
            self.result = (False, f"The connection check failed: {exc}")


def start_check(url: str, token: str) -> ConnectionCheck:
    """Start the Test connection check (returns at once; poll ``.result``)."""
    return ConnectionCheck(url, token)


def check_connection(url: str, token: str) -> Tuple[bool, str]:
    """``(ok, one line)`` for the Test connection button: who the server says we are, or what is wrong."""
    from medseg_backend.service.client import check_connection as check

    return check(url, token)


def shutdown() -> None:
    """Close the server sessions of this Slicer (Slicer exits)."""
    configure(MODE_LOCAL)


def from_settings(value) -> Optional[str]:
    """Apply the saved settings (``value(key, default)`` reads one); returns a one-line problem or None. A saved
    server that is no longer valid leaves models on this computer."""
    saved = str(value(SETTINGS_MODE, MODE_LOCAL) or MODE_LOCAL)
    try:
        configure(saved if saved in MODES else MODE_LOCAL, str(value(SETTINGS_URL, "") or ""),
                  str(value(SETTINGS_TOKEN, "") or ""))
    except InputError as exc:
        configure(MODE_LOCAL)
        return f"{exc} Models run on this computer meanwhile."
    return None
