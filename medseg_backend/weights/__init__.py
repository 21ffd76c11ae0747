"""Model weights: the registry (:mod:`.registry`: which models exist, their files, licences and hashes; data
only) and the store (:mod:`.store`: the shared cache folder, hash and licence checks, fetch / import / verify /
delete, and :func:`open_model`, which hands a checked file to the pure loader ``models.loader``)."""
from .registry import ENTRIES, ModelEntry, as_dict, entries, get_entry
from .store import (accept_licence, cache_dir, delete, fetch, import_weights, installed_path, licence_accepted,
                    not_installed_error, open_model, platform_cache_dir, resolve_weights, status, verify, weights_dir)

__all__ = ["ENTRIES", "ModelEntry", "as_dict", "entries", "get_entry", "accept_licence", "cache_dir", "delete",
           "fetch", "import_weights", "installed_path", "licence_accepted", "not_installed_error", "open_model", "platform_cache_dir",
           "resolve_weights", "status", "verify", "weights_dir"]
