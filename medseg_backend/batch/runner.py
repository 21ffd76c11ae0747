"""Running a checked cohort on Ray: one actor per worker holding its loaded engines, cases handed out one at a time.

Local Ray by default (``workers`` actors sharing the machine's cores, a GPU share each when there is one), or an
existing cluster (``address``; inputs and the output folder must then be on a file system every node sees). Each
actor runs :func:`.case.run_case`, which writes the case's outputs and, last, its record; the driver prints a
progress line per case and collects the summary rows. A case whose actor dies is one failed row and the actor is
replaced; an interrupt (Ctrl-C) stops handing out cases, shuts Ray down and leaves every finished case recorded.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from typing import Callable, Dict, List, Optional

from ..errors import MedSegError

INSTALL_HINT = "pip install 'medseg-backend[batch]' (or: pip install 'ray>=2.9' 'highdicom>=0.22')"


def import_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise MedSegError(f"medseg batch runs on Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    """The actor: engines loaded on first use and kept; ``run`` = :func:`.case.run_case`."""

    def __init__(self, outdir: str, device: str, threads: int, version: str) -> None:
        import torch

        from .case import Engines

        torch.set_num_threads(max(1, int(threads)))
        self.outdir, self.version = outdir, version
        self.engines = Engines(device)

    def run(self, spec: Dict) -> Dict:
        from .case import run_case

        row = run_case(spec, self.outdir, self.engines, self.version)
        row["worker_pid"] = os.getpid()
        row["model_loads"] = self.engines.loads
        return row


def start_ray(workers: Optional[int], address: Optional[str]) -> bool:
    """Connect to (``address``) or start a local Ray; returns True when this call started it (then the caller shuts
    it down). An already initialised Ray (a test session, a notebook) is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=True)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, workers or 1), include_dashboard=False, logging_level="ERROR")
    except Exception as exc:  # noqa: BLE001 - Ray's reasons are many (address, sockets, ports): one line
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise MedSegError(f"Cannot start or reach {where} ({detail[:200]}): check --address, or set RAY_TMPDIR to a "
                          "short writable folder; nothing was run.") from None
    return True


def run_cases(specs: List[Dict], outdir: str, *, workers: Optional[int] = None, device: str = "auto",
              version: str = "", say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
              offset: int = 0, total: Optional[int] = None) -> List[Dict]:
    """Run ``specs`` (:meth:`CaseSpec.as_dict`) on the initialised Ray with ``workers`` actors (default: one per
    CPU of the cluster); return one summary row per case, in finishing order. ``offset``/``total`` number the
    progress lines when some cases were skipped."""
    ray = import_ray()
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1)) or 1
    gpus = float(resources.get("GPU", 0))
    n = max(1, min(workers or cpus, len(specs)))
    per_cpu = max(1, cpus // n)
    options = {"num_cpus": per_cpu, "num_gpus": gpus / n if gpus else 0, "max_restarts": 0}
    env = {}
    if os.environ.get("MEDSEG_HOME"):
        env["MEDSEG_HOME"] = os.environ["MEDSEG_HOME"]  # the same weights cache and licence acceptances
    if not address_is_remote(ray):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
    if env:
        options["runtime_env"] = {"env_vars": env}
    Actor = ray.remote(_Worker)

    def new_actor():
        return Actor.options(**options).remote(outdir, device, per_cpu, version)

    actors = [new_actor() for _ in range(n)]
    pending = deque(specs)
    inflight: Dict = {}
    rows: List[Dict] = []
    total = total if total is not None else len(specs)
    t0 = time.perf_counter()
    try:
        free = list(actors)
        while pending or inflight:
            while free and pending:
                actor = free.pop()
                spec = pending.popleft()
                inflight[actor.run.remote(spec)] = (spec, actor)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            spec, actor = inflight.pop(ref)
            try:
                row = ray.get(ref)
                free.append(actor)
            except Exception as exc:  # the actor process died (out of memory, a crash): replace it
                row = {"case_id": spec["case_id"], "model": spec["model"], "status": "failed",
                       "error": f"worker died: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                ray.kill(actor)
                free.append(new_actor())
            rows.append(row)
            done = offset + len(rows)
            say(progress_line(row, done, total, time.perf_counter() - t0))
    except KeyboardInterrupt:
        for spec, _ in inflight.values():
            rows.append({"case_id": spec["case_id"], "model": spec["model"], "status": "interrupted",
                         "error": "run interrupted while this case ran: run again to finish it"})
        for spec in pending:
            rows.append({"case_id": spec["case_id"], "model": spec["model"], "status": "not run",
                         "error": "run interrupted before this case started: run again to finish it"})
        raise _Interrupted(rows)
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
    return rows


class _Interrupted(KeyboardInterrupt):
    def __init__(self, rows: List[Dict]) -> None:
        super().__init__("interrupted")
        self.rows = rows


def address_is_remote(ray) -> bool:
    try:
        return len(ray.nodes()) > 1
    except Exception:  # noqa: BLE001
        return False


def progress_line(row: Dict, done: int, total: int, elapsed: float) -> str:
    w = len(str(total))
    head = f"[{done:{w}d}/{total}] {row['case_id']}: {row['status']}"
    if row["status"] != "done":
        return f"{head} - {row.get('error', '')}"
    bits = [f"{row.get('seconds', 0):.1f} s", f"{row.get('slices')} slice(s)"]
    if row.get("flagged") is not None:
        bits.append(f"{row['flagged']} flagged")
    if row.get("dice") is not None:
        bits.append(f"Dice {row['dice']:.3f}")
    rate = done / elapsed * 3600 if elapsed > 0 else 0
    return f"{head} ({', '.join(bits)}); {rate:.0f} cases/h so far"
