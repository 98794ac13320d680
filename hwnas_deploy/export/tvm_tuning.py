"""TVM tuning shared by every sub-network: meta-schedule records per target and workload.

Sub-networks of one space share their operator workloads (a fused convolution + bias + activation
of one shape recurs across thousands of networks), so tuning is per workload, not per network.
`tune` extracts the distinct workloads (meta-schedule's fused tasks) of the networks it is given,
tunes each for a trial budget, and every later TVM build with the database (`export.tvm.to_tvm`)
compiles each of its workloads from the best record held, a network never seen while tuning
included; a workload without a record keeps TVM's default (untuned) code.

On disk, plain JSON (meta-schedule's own `JSONDatabase`, one per target, since its records do not
say which target they were measured on):

    DIR/meta.json                    {"format", "tvm": the TVM version, "id"}
    DIR/<target digest>/target.json  the TVM target (the CPU and its core count)
    DIR/<target digest>/workloads.json, records.json

Records of another TVM version are refused by name: a schedule is code for one compiler.
Tuning appends records as they are measured, so a stopped run keeps everything it measured;
tuning again tops every workload up to the budget (`trials` per workload).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.export.tvm import target_spec

FORMAT = "hwnas-tvm-tuning/1"
META = "meta.json"
ENV_VAR = "HWNAS_TUNING_DB"


class TuningError(ConfigError):
    """A tuning database that cannot be used as it is (missing, another TVM's, malformed)."""


def tvm_version() -> str:
    import tvm

    return tvm.__version__


@dataclass(frozen=True)
class Tuning:
    """Build TVM libraries from `database`'s records measured for code running on `threads` cores
    (the target's `num-cores`: 1-thread and 2-thread code are tuned apart)."""

    database: TuningDatabase
    threads: int = 1

    def target(self, target: str = "host") -> dict:
        return {**target_spec(target), "num-cores": int(self.threads)}


class TuningDatabase:
    """The records in folder `path`. `create`: make the folder if it is not one yet."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path).expanduser()
        meta_path = self.path / META
        if not meta_path.exists():
            if not create:
                raise TuningError(f"tuning database {self.path}: no {META} there (tune into it first: "
                                  "`hwnas tune --tuning-db ...`)")
            self.path.mkdir(parents=True, exist_ok=True)
            meta = {"format": FORMAT, "tvm": tvm_version(), "id": uuid.uuid4().hex[:8],
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            tmp = meta_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta, indent=1) + "\n")
            tmp.replace(meta_path)
        try:
            meta = json.loads(meta_path.read_text())
            fmt, version, ident = meta["format"], meta["tvm"], meta["id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TuningError(f"tuning database {meta_path}: unreadable ({exc})") from None
        if fmt != FORMAT:
            raise TuningError(f"tuning database {meta_path}: format {fmt!r}; this version reads {FORMAT!r}")
        if version != tvm_version():
            raise TuningError(f"tuning database {self.path}: its records are TVM {version}'s and this is TVM "
                              f"{tvm_version()}; a schedule is code for one compiler version: tune again into "
                              "another --tuning-db (or remove this one)")
        self.id: str = ident
        self.tvm: str = version
        self._databases: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"TuningDatabase({str(self.path)!r}, id={self.id})"

    def __getstate__(self) -> dict:  # a plan travels to a lab's hosts: TVM's handles do not
        return {**self.__dict__, "_databases": {}}

    @staticmethod
    def target_digest(spec: dict) -> str:
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]

    def folder(self, spec: dict) -> Path:
        return self.path / self.target_digest(spec)

    def database(self, spec: dict):
        """meta-schedule's JSONDatabase of `spec`'s records (created on first use)."""
        digest = self.target_digest(spec)
        if digest not in self._databases:
            from tvm.s_tir import meta_schedule as ms

            if not (self.path / META).exists():  # e.g. a plan sent to a lab host that lacks the folder
                raise TuningError(f"tuning database {self.path} (id {self.id}) is not on this host: give every "
                                  "host the same folder (--tuning-db on shared storage)")

            folder = self.path / digest
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "target.json").write_text(json.dumps(spec, sort_keys=True) + "\n")
            self._databases[digest] = ms.database.JSONDatabase(
                str(folder / "workloads.json"), str(folder / "records.json"), allow_missing=True)
        return self._databases[digest]

    def records(self, spec: dict) -> int:
        """How many records `spec` holds (its revision: they are only ever appended)."""
        path = self.folder(spec) / "records.json"
        if not path.exists():
            return 0
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())

    def targets(self) -> list[dict]:
        found = []
        for p in sorted(self.path.glob("*/target.json")):
            try:
                found.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def trials_by_workload(self, spec: dict) -> Counter:
        """Trials spent per workload (its structural hash): the records held, failed trials
        included, or the budget a finished tuning reached if more (a workload whose design space
        has fewer candidates than the budget ends with fewer records)."""
        done = Counter()
        if self.records(spec):
            from tvm_ffi import structural_hash

            done.update(int(structural_hash(r.workload.mod)) for r in self.database(spec).get_all_tuning_records())
        for shash, budget in self._finished(spec).items():
            done[int(shash)] = max(done[int(shash)], int(budget))
        return done

    def _finished(self, spec: dict) -> dict:
        try:
            return json.loads((self.folder(spec) / "finished.json").read_text())
        except (OSError, ValueError):
            return {}

    def mark_finished(self, spec: dict, shash: int, budget: int) -> None:
        """Record that tuning `shash` reached `budget` trials (written atomically)."""
        finished = self._finished(spec)
        finished[str(shash)] = max(int(budget), int(finished.get(str(shash), 0)))
        path = self.folder(spec) / "finished.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(finished, sort_keys=True) + "\n")
        tmp.replace(path)


def default_path(store_url: str | None = None) -> Path:
    """Where the tuning database lives unless named: $HWNAS_TUNING_DB, else `tvm-tuning/` beside
    a SQLite store (`store.resolve_url`: $HWNAS_DB or hwnas.sqlite), else in the user cache
    folder (a lab's PostgreSQL store: give its hosts one shared folder with --tuning-db)."""
    import os

    from hwnas_deploy.resources import user_cache_dir
    from hwnas_deploy.store import resolve_url

    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    url = resolve_url(store_url)
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url[len("sqlite:///"):]).parent / "tvm-tuning"
    return user_cache_dir() / "tvm-tuning"


def open_database(where: str | Path | TuningDatabase | None, store_url: str | None = None) -> TuningDatabase | None:
    """A tuning database to build with: `where` named ("none": none), or by default the one at
    `default_path` if there is one there."""
    if isinstance(where, TuningDatabase):
        return where
    if where is not None and str(where) != "auto":
        return None if str(where) == "none" else TuningDatabase(where)
    path = default_path(store_url)
    return TuningDatabase(path) if (path / META).exists() else None


# -- workloads ---------------------------------------------------------------------------------

def fused(mod, spec: dict):
    """`mod` after the passes that make meta-schedule's tasks (the same ones its compile runs
    before applying a database, so the workloads tuned are the workloads looked up)."""
    import tvm
    from tvm import relax
    from tvm.relax import pipeline

    target = tvm.target.Target(spec)
    passes = [*pipeline.library_dispatch_passes(target), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(), relax.transform.FuseOps(),
              relax.transform.FuseTIR()]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


@dataclass
class Workload:
    """One tuning task: a fused operator (its TIR module) and how often the networks run it."""

    name: str
    mod: object = field(repr=False)
    shash: int = 0
    flops: float = 0.0
    weight: int = 1


def workloads(mod, spec: dict) -> list[Workload]:
    """The distinct tuning tasks of a Relax module (`export.tvm.relax_module`) for target `spec`."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm_ffi import structural_hash

    found = []
    for task in ms.relax_integration.extract_tasks(fused(mod, spec), tvm.target.Target(spec)):
        if task.mod.attrs is not None and task.mod.attrs.get("tirx.is_scheduled", False):
            continue
        dispatched = task.dispatched[0]
        try:
            flops = float(estimate_tir_flops(dispatched))
        except Exception:  # noqa: BLE001  (a task it cannot count is ordered last, not refused)
            flops = 0.0
        found.append(Workload(task.task_name, dispatched, int(structural_hash(dispatched)), flops, int(task.weight)))
    return found


def distinct(groups: list[list[Workload]]) -> list[Workload]:
    """The workloads of several networks, each once (weights summed)."""
    seen: dict[int, Workload] = {}
    for group in groups:
        for w in group:
            if w.shash in seen:
                seen[w.shash].weight += w.weight
            else:
                seen[w.shash] = Workload(w.name, w.mod, w.shash, w.flops, w.weight)
    return list(seen.values())


def applied(found: list[Workload], database: TuningDatabase, spec: dict) -> tuple[int, str]:
    """How many of `found` the database holds a measured record for, and a digest of those
    records (what a tuned build of them depends on)."""
    if not database.records(spec):
        return 0, ""
    db = database.database(spec)
    digest = hashlib.sha256()
    tuned = 0
    for w in sorted(found, key=lambda w: w.shash):
        if not db.has_workload(w.mod):
            continue
        best = db.get_top_k(db.commit_workload(w.mod), 1)
        if best:
            tuned += 1
            digest.update(f"{w.shash}:{best[0].trace.as_json()!s}\n".encode())
    return tuned, digest.hexdigest()[:16] if tuned else ""


# -- tuning ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RpcRunner:
    """Time candidates on a board through a TVM RPC tracker (`key`: the server key to request)."""

    tracker: str
    key: str
    session_timeout_s: float = 60.0


@dataclass
class TuneReport:
    database: str
    target: dict
    workloads: int = 0
    already: int = 0  # held the budget before this run
    tuned: int = 0  # tuned (or topped up) now
    trials: int = 0  # measured now
    seconds: float = 0.0
    per_workload: list[dict] = field(default_factory=list)  # name, flops, weight, trials, best_us, seconds
    interrupted: bool = False

    def line(self) -> str:
        text = (f"{self.workloads} workloads: tuned now {self.tuned} ({self.trials} trials, {self.seconds:.0f} s), "
                f"already tuned {self.already}")
        return text + (" (interrupted: run the same command again to resume)" if self.interrupted else "")


def _builder(root: str, cross_cc: str | None):
    """Candidates built in this process (meta-schedule's LocalBuilder starts two fresh
    processes per batch, which import TVM: ~4 s a candidate on 2 cores, where a build is 0.1 s)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    lib = default_build(item.mod, item.target, None)
                    path = Path(tempfile.mkdtemp(dir=root)) / "candidate.so"
                    if cross_cc:
                        from tvm.support import cc as tvm_cc

                        lib.export_library(str(path), fcompile=tvm_cc.cross_compiler(cross_cc))
                    else:
                        lib.export_library(str(path))
                    results.append(BuilderResult(str(path), None))
                except Exception as exc:  # noqa: BLE001  (a candidate that does not build is a failed trial)
                    results.append(BuilderResult(None, f"build failed: {exc}"))
            return results

    return InProcessBuilder()


def _runner(rpc: RpcRunner | None):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=10, enable_cpu_cache_flush=False)
    if rpc is None:
        return ms.runner.LocalRunner(evaluator_config=evaluator)
    host, _, port = rpc.tracker.rpartition(":")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=rpc.key,
                                 session_timeout_sec=int(rpc.session_timeout_s))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=1)


def _progress_callback(bar, counted: list[int]):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            counted[0] += len(runner_results)
            bar.update(len(runner_results))

    return Progress()


def _strategy(trials: int):
    """Evolutionary search sized to the budget: its defaults (a population of 512 evolved 4
    times per batch) cost ~10 s a batch on 2 cores, more than measuring a small budget does."""
    from tvm.s_tir import meta_schedule as ms

    return ms.search_strategy.EvolutionarySearch(population_size=min(512, max(64, 8 * trials)),
                                                 init_min_unmeasured=min(50, max(16, trials)),
                                                 genetic_num_iters=4 if trials >= 64 else 2)


def _quiet_logger():
    import logging

    logger = logging.getLogger("hwnas.tvm_tuning")
    logger.setLevel(logging.WARNING)
    return logger


def cpu_intrinsics_only() -> None:
    """Register only the CPU tensor intrinsics (x86, Arm) before meta-schedule imports the
    package of all of them: its CUDA, ROCm and Hexagon ones parse hundreds of TVMScript functions
    with `inspect.stack()` at import, 45-75 s on 2 cores (2 s for the CPU ones). Tuning here
    targets CPUs only; a process that already imported the package keeps it."""
    import importlib
    import importlib.util
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__, package.__package__ = spec, name
    sys.modules[name] = package
    for cpu in ("x86", "arm_cpu"):
        importlib.import_module(f"{name}.{cpu}")


def _us(record) -> float | None:
    secs = [float(s) for s in (record.run_secs or [])]
    return 1e6 * sum(secs) / len(secs) if secs and all(s < 1e9 for s in secs) else None


def tune(found: list[Workload], database: TuningDatabase, spec: dict, trials: int, *,
         rpc: RpcRunner | None = None, cross_cc: str | None = None, progress: bool = True,
         seed: int = 0) -> TuneReport:
    """Tune each workload of `found` up to `trials` records in `database` (target `spec`), the
    costliest first (FLOPs x how often the networks run it), so a run stopped early has spent its
    time where the latency is. Ctrl-C stops after the current batch; what was measured is kept."""
    import tvm
    from tqdm import tqdm
    from tvm.s_tir import meta_schedule as ms

    if trials < 1:
        raise ConfigError(f"trials (--trials) must be at least 1, got {trials}")
    report = TuneReport(database=str(database.path), target=spec, workloads=len(found))
    done = database.trials_by_workload(spec)
    todo = sorted(found, key=lambda w: -w.flops * w.weight)
    remaining = {w.shash: max(0, trials - done.get(w.shash, 0)) for w in todo}
    report.already = sum(1 for w in todo if not remaining[w.shash])
    todo = [w for w in todo if remaining[w.shash]]
    if not todo:
        return report
    cpu_intrinsics_only()
    db = database.database(spec)
    target = tvm.target.Target(spec)
    runner = _runner(rpc)
    bar = tqdm(total=sum(remaining.values()), unit="trial", desc=f"tuning {len(todo)} workloads", disable=not progress)
    start = time.perf_counter()
    counted = [0]  # trials measured (the bar counts nothing when hidden)
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-tune-") as work:
            builder = _builder(work, cross_cc)
            for i, w in enumerate(todo):
                n = remaining[w.shash]
                bar.set_postfix_str(w.name[:40])
                t0, before = time.perf_counter(), counted[0]
                context = ms.TuneContext(mod=w.mod, target=target, space_generator="post-order-apply",
                                         search_strategy=_strategy(n), task_name=w.name,
                                         logger=_quiet_logger(), rand_state=seed + i, num_threads=2).clone()
                callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.RemoveBuildArtifact(),
                             ms.measure_callback.UpdateCostModel(), _progress_callback(bar, counted)]
                ms.tune_tasks(tasks=[context], task_weights=[1.0], work_dir=work, max_trials_global=n,
                              max_trials_per_task=n, num_trials_per_iter=min(n, 32), builder=builder, runner=runner,
                              database=db, cost_model="xgb", measure_callbacks=callbacks,
                              task_scheduler="round-robin")
                database.mark_finished(spec, w.shash, trials)
                best = db.get_top_k(db.commit_workload(w.mod), 1)
                report.tuned += 1
                report.per_workload.append({"name": w.name, "flops": w.flops, "weight": w.weight,
                                            "trials": counted[0] - before,
                                            "best_us": _us(best[0]) if best else None,
                                            "seconds": round(time.perf_counter() - t0, 2)})
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        report.trials = counted[0]
        bar.close()
        report.seconds = time.perf_counter() - start
    return report
