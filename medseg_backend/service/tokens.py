"""The service's users: one bearer token per user, stored hashed (sha256 of a per-user salt + the token).

The token file (``medseg serve-token --tokens FILE add USER``) is JSON, mode 0600, written atomically::

    {"version": 1, "users": {"alice": {"salt": HEX, "sha256": HEX, "created": "2026-12-07T15:00:00Z"}}}

A token is 32 random bytes (URL-safe base64), shown once when it is made; only its salted hash is kept, so a
leaked file gives no usable token. Checking a token hashes it with each user's salt and compares in constant time
(``hmac.compare_digest``). The server re-reads the file when it changes, so ``add`` / ``revoke`` take effect on the
next request without a restart.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from typing import Dict, List, Optional

from ..errors import InputError

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def _digest(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode("utf-8")).hexdigest()


def check_user(user: str) -> str:
    if not USER_RE.match(str(user or "")):
        raise InputError(f"User name {user!r} is not valid: use 1-64 letters, digits, '.', '_', '@' or '-', starting "
                         "with a letter or digit.")
    return str(user)


class TokenStore:
    """The token file; :meth:`user_for` is what the server calls per request (cached until the file changes)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(str(path)))
        self._stamp = None
        self._users: Dict[str, Dict[str, str]] = {}

    # ------------------------------------------------------------------------------------------------ reading --
    def _load(self) -> Dict[str, Dict[str, str]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._users = None, {}
            return self._users
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                with open(self.path, "r", encoding="utf-8") as fh:
                    data = json.load(fh)
                users = data["users"]
                if not isinstance(users, dict):
                    raise ValueError
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"The token file {self.path} is not readable or not a MedSeg token file: make it "
                                 "again with 'medseg serve-token add USER'.") from None
            self._stamp, self._users = stamp, users
        return self._users

    def check_private(self) -> None:
        """Refuse a token file that other users can read or write (the server checks this at start)."""
        if not os.path.exists(self.path):
            raise InputError(f"No token file at {self.path}: make one with 'medseg serve-token --tokens "
                             f"{self.path} add USER' (the service lets nobody in without it).")
        mode = os.stat(self.path).st_mode
        if os.name != "nt" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(f"The token file {self.path} is open to other users (mode {stat.S_IMODE(mode):o}): "
                             f"run 'chmod 600 {self.path}'.")

    def user_for(self, token: Optional[str]) -> Optional[str]:
        """The user whose token this is, or None."""
        if not token:
            return None
        found = None
        for user, entry in self._load().items():
            try:
                ok = hmac.compare_digest(_digest(str(entry["salt"]), token), str(entry["sha256"]))
            except (KeyError, ValueError, TypeError):
                continue
            if ok:
                found = user
        return found

    def users(self) -> List[Dict[str, str]]:
        return [{"user": u, "created": str(e.get("created", ""))} for u, e in sorted(self._load().items())]

    # ------------------------------------------------------------------------------------------------ writing --
    def _write(self, users: Dict[str, Dict[str, str]]) -> None:
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(self.path)}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": 1, "users": users}, fh, indent=1, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
        self._stamp = None

    def add(self, user: str, replace: bool = False) -> str:
        """Make a token for ``user`` and return it (shown once; only its hash is stored)."""
        user = check_user(user)
        users = dict(self._load())
        if user in users and not replace:
            raise InputError(f"User '{user}' already has a token: revoke it first, or add with --replace to issue a "
                             "new one (the old one stops working).")
        token = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        users[user] = {"salt": salt, "sha256": _digest(salt, token), "created": now}
        self._write(users)
        return token

    def revoke(self, user: str) -> None:
        users = dict(self._load())
        if user not in users:
            raise InputError(f"User '{user}' has no token in {self.path}: see 'medseg serve-token list'.")
        del users[user]
        self._write(users)
