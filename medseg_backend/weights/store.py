"""The weights store, by job (this module only re-exports, so ``from medseg_backend.weights import store`` and
``store.fetch(...)`` keep working):

* :mod:`.cache` - where the cache folder is (``$MEDSEG_HOME`` or the platform's user cache), its layout, the
  inter-process locks;
* :mod:`.state` - ``state.json`` (licence acceptances, recorded hashes; atomic, locked updates);
* :mod:`.licences` - which licences need acceptance, accepting one;
* :mod:`.installed` - which file is installed (pip package copy, else the cache);
* :mod:`.hashes` - the hash policy, the once-per-process check of an installed file, the layout check;
* :mod:`.install` - fetch / import / delete;
* :mod:`.report` - status and verify;
* :mod:`.loading` - the file to load (:func:`resolve_weights`) and :func:`open_model`.

The models it knows are the registry's (:mod:`.registry`, data only); turning a file into a module is the
loader's job (:mod:`medseg_backend.models.loader`, path -> module).
"""
from .cache import cache_dir, platform_cache_dir, weights_dir
from .install import delete, fetch, import_weights
from .installed import installed_path, not_installed_error
from .licences import accept_licence, licence_accepted
from .loading import open_model, resolve_weights
from .registry import ENTRIES, get_entry
from .report import status, verify

__all__ = [
    "cache_dir", "platform_cache_dir", "weights_dir", "resolve_weights", "installed_path", "open_model",
    "fetch", "import_weights", "verify", "delete", "status", "accept_licence", "licence_accepted",
    "not_installed_error", "ENTRIES", "get_entry",
]
