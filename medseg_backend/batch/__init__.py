"""A cohort in one command (``medseg batch``): a CSV manifest of cases, run on Ray, resumable, with a summary and
DICOM SEG output for DICOM inputs.

* :mod:`.manifest` - the CSV columns, checked whole before anything runs (no torch, no Ray);
* :mod:`.case` - one case in a worker: engines loaded once per worker, outputs all or none, the record last;
* :mod:`.records` - the per-case record that makes a re-run skip finished cases;
* :mod:`.runner` - the Ray actors (Ray is an optional extra: ``pip install 'medseg-backend[batch]'``);
* :mod:`.summary` - ``summary.csv`` / ``summary.json`` and the table printed at the end;
* :mod:`.dicomseg` - DICOM SEG with highdicom (optional extra).

Importing this package imports neither Ray, highdicom nor torch.
"""
