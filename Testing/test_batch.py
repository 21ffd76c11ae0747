"""`medseg batch` without Ray running: a manifest with bad rows is refused whole (every line named, nothing
written), the command works out what to say without the optional extra, and the surface distance is right.

The runs on Ray are in test_batch_ray.py."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medseg_backend.cli import main
from medseg_backend.metrics import surface_distances


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_bad_rows_refused_whole_with_every_line(data_dir, tmp_path, capsys):
    ct = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    lab = data_dir / "totalseg_ct_sm" / "labels.nii.gz"
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "case_id,image,model,boxes,label,labels,examples,library,output\n"
        f'good1,{ct},lite-medsam,"20,20,12,100,80,14",,,,,\n'                     # line 2: fine
        f'bad model,{ct},sam3,"20,20,12,100,80,14",,,,,\n'                        # line 3: id and model
        f'missing,{tmp_path / "nope.nii.gz"},,"1,1,1,5,5,5",,,,,\n'               # line 4: no image
        f'outside,{ct},,"20,20,40,100,80,45",,,,,\n'                               # line 5: box past the 30 slices
        f'good1,{ct},,"20,20,12,100,80,14",,,,,other.nii.gz\n'                     # line 6: duplicate id
        f"absent,{ct},,,{lab},77,,,\n"                                             # line 7: label 77 absent
        f"both,{ct},universeg,,,,{ct}:{lab},{tmp_path},\n"                         # line 8: examples and library
        f'ext,{ct},,"20,20,12,100,80,14",,,,,seg.png\n'                            # line 9: 2-D output format
        f"noprompt,{ct},lite-medsam,,,,,,\n",                                      # line 10: no boxes
        encoding="utf-8")
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--check")
    assert rc == 2 and not out.exists()
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and "8 problem(s), nothing was run" in lines[0]
    named = [int(l.split()[1].rstrip(":")) for l in lines[1:]]
    assert named == [3, 4, 5, 6, 7, 8, 9, 10], err
    text = "\n".join(lines[1:])
    for needle in ("case_id 'bad model'", "not found", "Box 1", "already used on line 2", "77 not in",
                   "exactly one", ".nii.gz", "no prompt"):
        assert needle in text, (needle, err)


def test_a_bad_axis_or_propagation_is_refused_with_the_run_specs_message(data_dir, tmp_path, capsys):
    """The manifest checks a row's axis and propagation with the run spec's check: the same line as the CLI, the
    worker and the Slicer module give."""
    from medseg_backend.errors import InputError
    from medseg_backend.runspec import BoxRun

    ct = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("case_id,image,boxes,axis,propagation\n"
                        f'a,{ct},"20,20,12,100,80,14",oblique,\n'
                        f'b,{ct},"20,20,12,100,80,14",axial,sideways\n', encoding="utf-8")
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", tmp_path / "out", "--check")
    assert rc == 2
    for line, change in ((2, dict(axis="oblique")), (3, dict(propagation="sideways"))):
        with pytest.raises(InputError) as made:
            BoxRun(boxes=[(20, 20, 12, 100, 80, 14)], **change)
        expected = f"line {line}: {str(made.value).rstrip('.')}"       # the batch lists rows without the full stop
        assert expected in [l.strip() for l in err.splitlines()], err


def test_good_manifest_check_lists_cases(data_dir, tmp_path, capsys):
    ct = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    lab = data_dir / "totalseg_ct_sm" / "labels.nii.gz"
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,image,label,labels,margin\n" f"k,{ct},{lab},2;3,1\n", encoding="utf-8")
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", tmp_path / "o", "--check")
    assert rc == 0, err
    assert "1 case(s) checked" in stdout and "k: lite-medsam, 2 object(s) -> k.nii.gz" in stdout
    assert not (tmp_path / "o").exists()


def test_without_the_extra_says_how_to_install(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    manifest = tmp_path / "m.csv"
    manifest.write_text(f'case_id,image,boxes\na,{data_dir / "totalseg_ct_sm" / "ct.nii.gz"},"1,1,1,9,9,3"\n')
    rc, _, err = _run(capsys, "batch", manifest, "-o", tmp_path / "o")
    assert rc == 2 and "pip install 'medseg-backend[batch]'" in err and not (tmp_path / "o").exists()


def test_cli_imports_neither_ray_nor_highdicom():
    code = ("import sys, medseg_backend.cli, medseg_backend.batch.manifest; "
            "print([m for m in ('ray', 'highdicom', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_surface_distances_of_shifted_cubes():
    a = np.zeros((20, 20, 20), bool)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = True
    b[5:15, 5:15, 7:17] = True  # shifted 2 voxels along I
    assd, hd95 = surface_distances(a, b, (1.0, 1.0, 0.5))
    assert hd95 == pytest.approx(1.0)      # 2 voxels x 0.5 mm
    assert 0 < assd <= 1.0
    assert surface_distances(a, a) == (0.0, 0.0)
    assert all(np.isnan(surface_distances(a, np.zeros_like(a))))
