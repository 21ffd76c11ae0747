"""Model weights: the registry (:mod:`.registry`: which models exist, their files, licences and hashes; data
only) and the store, one module per job (:mod:`.cache` folder and locks, :mod:`.state`, :mod:`.licences`,
:mod:`.installed`, :mod:`.hashes`, :mod:`.install` fetch / import / delete, :mod:`.report` status / verify,
:mod:`.loading` with :func:`open_model`, which hands a checked file to the pure loader ``models.loader``);
:mod:`.store` re-exports them under the old path."""
from .cache import cache_dir, platform_cache_dir, weights_dir
from .install import delete, fetch, import_weights
from .installed import installed_path, not_installed_error
from .licences import accept_licence, licence_accepted
from .loading import open_model, resolve_weights
from .registry import ENTRIES, ModelEntry, as_dict, entries, get_entry
from .report import status, verify

__all__ = ["ENTRIES", "ModelEntry", "as_dict", "entries", "get_entry", "accept_licence", "cache_dir", "delete",
           "fetch", "import_weights", "installed_path", "licence_accepted", "not_installed_error", "open_model",
           "platform_cache_dir", "resolve_weights", "status", "verify", "weights_dir"]
