"""The bundled fixtures: every data file in Testing/Data is listed in the manifest with its sha256, and a corrupt,
missing or unlisted file is refused with a message that names it."""
from __future__ import annotations

import shutil

import pytest

import fixture_data


def test_manifest_lists_exactly_the_data_files(data_dir):
    on_disk = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")
                     if p.is_file() and p.suffix not in (".md", ".py", ".pyc") and p.name != "MANIFEST.sha256"
                     and "__pycache__" not in p.parts)
    assert on_disk == sorted(fixture_data.manifest())
    assert sorted(fixture_data.verify_all()) == on_disk
    # every source folder carries its licence file
    for folder in {rel.split("/")[0] for rel in on_disk} - {"litemedsam_reference", "universeg_reference"}:
        assert list((data_dir / folder).glob("LICENSE*")), folder
    for folder in {rel.split("/")[0] for rel in on_disk}:
        assert (data_dir / folder / "SOURCE.md").is_file(), folder


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A copy of a few fixture files with the module pointed at it (caches cleared before and after)."""
    rels = ["universeg_reference/state_dict_v1.json", "dcmqi_ct3slice/crop.json"]
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixture_data.DATA_DIR / rel, tmp_path / rel)
    manifest = fixture_data.manifest()
    (tmp_path / "MANIFEST.sha256").write_text("".join(f"{manifest[r]}  {r}\n" for r in rels))
    monkeypatch.setattr(fixture_data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(fixture_data, "MANIFEST", tmp_path / "MANIFEST.sha256")
    fixture_data.manifest.cache_clear()
    fixture_data.path.cache_clear()
    yield tmp_path
    fixture_data.manifest.cache_clear()
    fixture_data.path.cache_clear()


def test_corrupt_missing_and_unlisted_fixtures_fail_loudly(data_copy):
    assert fixture_data.path("dcmqi_ct3slice/crop.json") == data_copy / "dcmqi_ct3slice" / "crop.json"
    target = data_copy / "universeg_reference" / "state_dict_v1.json"
    target.write_bytes(target.read_bytes() + b"\n")          # one byte more
    with pytest.raises(fixture_data.FixtureError, match=r"state_dict_v1\.json is corrupt: sha256 .*expected"):
        fixture_data.path("universeg_reference/state_dict_v1.json")
    target.unlink()
    fixture_data.path.cache_clear()
    with pytest.raises(fixture_data.FixtureError, match=r"state_dict_v1\.json is missing"):
        fixture_data.path("universeg_reference/state_dict_v1.json")
    with pytest.raises(fixture_data.FixtureError, match=r"other\.npz is not listed in MANIFEST\.sha256"):
        fixture_data.path("other.npz")
    with pytest.raises(fixture_data.FixtureError, match="corrupt|missing"):
        fixture_data.verify_all()
