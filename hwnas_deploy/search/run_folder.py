"""A search's run folder, and what a user takes out of it.

    RUN/front.json        the Pareto set (values + configs), the recipe, the history
    RUN/front.png         front, hypervolume against evaluations, population by generation
    RUN/report.html       the same on one page, with the front as a table
    RUN/checkpoint.json   (algorithm searches) every evaluation: a killed run resumes from it
    RUN/artifacts/        deployable artifacts of the picked networks (recipe `export`)

`pick` chooses networks of a front: `knee` (the network closest to the ideal point in the
front's normalised objectives: the balanced trade-off), `all`, an index into the front (as
`hwnas front` lists it) or a config-hash prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas_deploy import datafile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.search.recipe import Prepared
from hwnas_deploy.search.run import SearchResult, html_report, plot_result, search

FRONT_FORMAT, FRONT_VERSION = "hwnas-search-front", 1


def run_recipe(prepared: Prepared, out_dir: str | Path, progress: bool = True) -> SearchResult:
    """Search as the recipe says and write the run folder (exports too, if the recipe asks)."""
    from hwnas_deploy.search import tactics

    r, p = prepared.recipe, prepared
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if r.tactic in ("full", "concurrent"):
        run = tactics.full if r.tactic == "full" else tactics.concurrent
        result = run(p.space, p.objectives, p.constraints, r.budget, r.population, r.generations, r.estimator, r.seed,
                     p.warm, p.allowed, progress=progress)
    else:
        result = search(p.space, p.objectives, p.constraints, r.algorithm, r.population, r.generations, r.seed,
                        checkpoint=out / "checkpoint.json", progress=progress, warm_start=p.warm, allowed=p.allowed,
                        reference=p.reference)
    body = {"format": FRONT_FORMAT, "version": FRONT_VERSION, "space": p.space.name,
            **({"space_source": p.space.source} if getattr(p.space, "source", None) else {}),
            "objectives": [{"name": o.name, "maximise": o.maximise, "spec": o.source, "measured": o.measured}
                           for o in p.objectives],
            "constraints": list(r.constraints), "tactic": r.tactic, "algorithm": r.algorithm,
            "evaluations": result.evaluations, "history": result.history, "front": result.front,
            "recipe": {**r.to_dict(), "file": r.source}}
    (out / "front.json").write_text(json.dumps(datafile.finite(body), indent=1) + "\n")
    plot_result(result, p.objectives, out / "front.png")
    title = f"{p.space.name} ({r.tactic}): {', '.join(r.objectives)}" + (
        f" | {', '.join(r.constraints)}" if r.constraints else "")
    html_report(result, p.objectives, out / "front.png", out / "report.html", title)
    if r.export and result.front:
        export_picked(out, r.export.get("pick", "knee"), r.export.get("formats", ["onnx"]))
    return result


@dataclass
class RunFront:
    path: Path
    space: str
    objectives: list[dict]  # name, maximise, spec
    front: list[dict]

    @property
    def names(self) -> list[str]:
        return [o["name"] for o in self.objectives]


def load_front(run: str | Path) -> RunFront:
    """The front of a run folder (or of a front.json)."""
    path = Path(run)
    path = path / "front.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such run (a folder written by `hwnas search`, holding front.json)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not a front.json ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FRONT_FORMAT:
        raise ConfigError(f"{path}: not a front.json of this hwnas (field 'format' must be {FRONT_FORMAT!r})")
    if data.get("space_source"):  # a space from a file of the user's: loaded, then known by its name
        from hwnas_deploy.spaces import get_space

        get_space(data["space_source"])
    return RunFront(path, data["space"], data["objectives"], data["front"])


def knee(run: RunFront) -> int:
    """Index of the front's network closest to the ideal point, objectives scaled to [0, 1]."""
    if not run.front:
        raise ConfigError(f"{run.path}: the front is empty")
    f = np.asarray([[-row[o["name"]] if o["maximise"] else row[o["name"]] for o in run.objectives]
                    for row in run.front], dtype=float)
    span = np.ptp(f, axis=0)
    scaled = (f - f.min(0)) / np.where(span > 0, span, 1.0)
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))


def pick(run: RunFront, how: str | int) -> list[int]:
    """Indices into the front: knee | all | INDEX | CONFIG-HASH prefix."""
    from hwnas_deploy.spaces import get_space

    how = str(how).strip()
    if how == "knee":
        return [knee(run)]
    if how == "all":
        return list(range(len(run.front)))
    if how.isdigit() and int(how) < len(run.front):
        return [int(how)]
    sp = get_space(run.space)
    hits = [i for i, row in enumerate(run.front) if sp.config_hash(row["config"]).startswith(how)]
    if how.isdigit() and not hits:  # a hash prefix can be all digits too: only then an index out of range
        raise ConfigError(f"--pick {how}: the front of {run.path} has {len(run.front)} networks "
                          f"(0..{len(run.front) - 1})")
    if len(hits) != 1:
        raise ConfigError(f"--pick {how!r}: {'no' if not hits else len(hits)} networks of the front match; give "
                          "knee, all, an index or a longer config-hash prefix (`hwnas front --run R` lists them)")
    return hits


def export_picked(run: str | Path, how: str | int, formats: list[str], out_dir: str | Path | None = None,
                  verify: bool = True) -> list:
    """Artifacts of the picked networks in every format, under RUN/artifacts/ (or `out_dir`)."""
    from hwnas_deploy.export import export_subnet
    from hwnas_deploy.spaces import get_space

    front = load_front(run)
    sp = get_space(front.space)
    out = Path(out_dir) if out_dir else front.path.parent / "artifacts"
    artifacts = []
    for i in pick(front, how):
        cfg = sp.validate(front.front[i]["config"])
        for fmt in formats:
            artifacts.append(export_subnet(sp, cfg, fmt, out, verify=verify))
    return artifacts


def deploy_picked(run: str | Path, how: str | int, device: str, runtime: str, store, *, force: bool = False,
                  artifacts_dir: str | Path | None = None, progress: bool = True) -> list[dict]:
    """`profiling.deploy` on the picked networks of a front (exported for the device's runtime,
    uploaded with their real weights, checked on the device and measured into the store). Returns,
    per network, its front values beside the stored measurement (or why it has none)."""
    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.measurement import SubNetwork
    from hwnas_deploy.profiling import deploy, deployed_row
    from hwnas_deploy.spaces import get_space

    front = load_front(run)
    sp = get_space(front.space)
    prof = load_profile(device)
    prof.require_runtime(runtime)
    indices = pick(front, how)
    networks = [SubNetwork(sp, sp.validate(front.front[i]["config"])) for i in indices]
    out = Path(artifacts_dir) if artifacts_dir else front.path.parent / "artifacts"
    report = deploy(prof, networks, runtime, store, force=force, artifacts_dir=out, progress=progress)
    return [{"index": i, "config_hash": net.config_hash, **{n: front.front[i][n] for n in front.names},
             **deployed_row(report.results[net.config_hash])} for i, net in zip(indices, networks, strict=True)]
