"""Search recipes: one YAML file says what to search, on which device, with which tactic.

    space: mcu-mbnet
    device: qemu-m7                     # what a plain `NAME=measure` objective measures on
    runtime: firmware
    objectives: [latency=measure, max:params]
    constraints: [sram<=327680, flash<=1048576]
    tactic: full                        # plain | validated | warm-start | full | concurrent
    population: 4
    generations: 60
    budget: 12                          # full / concurrent: validations in all
    estimator: costs                    # full / concurrent: the predictor of measured objectives
                                        # (or one per objective: {latency: gbt, accuracy: gp})
    export: {pick: knee, formats: [blob, c]}

A recipe is checked whole before anything runs: an unknown field, a value of the wrong type, an
unknown objective or an impossible constraint is refused with the field named. Relative paths
in a recipe (warm_start, popdb, reference, objective files) are relative to the recipe's folder.
`hwnas search` options override the recipe's fields; without a recipe they make one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hwnas_deploy.errors import ConfigError, HwnasError
from hwnas_deploy.resources import search_path
from hwnas_deploy.search.objectives import COUNTS, Constraint, Objective, parse_constraint, parse_objective
from hwnas_deploy.spaces import SearchSpace, get_space

TACTICS = {
    "plain": "an algorithm on the objectives as given (predictors, LUTs, counts; measures if they measure)",
    "validated": "every evaluation measured on the device (needs a measure objective)",
    "warm-start": "the first population from an earlier run's front (needs warm_start)",
    "full": "predictors fitted on budget - population validations, one long predictor search, its best "
            "population validated",
    "concurrent": "validate a population, refit predictors, search on them, validate the best; until the budget",
}
RECIPE_DIRS_ENV = "HWNAS_RECIPE_DIRS"
_PATH_IN_SPEC = re.compile(r"^((?:max:)?\s*[^=]+=(?:predictor|lut|table|supernet):)(.+)$")


@dataclass
class Recipe:
    space: str
    objectives: list[str]
    constraints: list[str] = field(default_factory=list)
    name: str | None = None
    device: str | None = None
    runtime: str | None = None
    tactic: str = "plain"
    algorithm: str = "nsga2"
    population: int = 50
    generations: int = 20
    seed: int = 0
    budget: int = 100
    estimator: str | dict[str, str] = "gbt"  # one for all measured objectives, or {objective: estimator}
    warm_start: str | None = None
    popdb: list[str] = field(default_factory=list)
    popdb_threshold: float = 0.05
    prune: str | None = None
    reference: str | None = None
    db: str | None = None
    lab: str | None = None  # HEAD:PORT of a lab whose devices take measure: objectives' measurements
    export: dict[str, Any] | None = None
    source: str = "options"  # the file it came from, for messages

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe", base: Path | None = None) -> Recipe:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a recipe is a mapping of fields, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown field {unknown[0]!r}; fields are {', '.join(known)}")
        for required in ("space", "objectives"):
            if data.get(required) in (None, [], ""):
                raise ConfigError(f"{source}: field {required!r} is required")
        values = {}
        for key, value in data.items():
            values[key] = _typed(source, key, value, known[key].type)
        recipe = cls(**values, source=source)
        if base is not None:
            recipe = recipe._relative_to(base)
        return recipe

    @classmethod
    def load(cls, name_or_path: str | Path) -> Recipe:
        path = find_recipe(name_or_path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        return cls.from_dict(data, str(path), path.parent)

    def overridden(self, **options: Any) -> Recipe:
        """This recipe with the options that are not None (and non-empty sequences) replacing fields."""
        changes = {k: v for k, v in options.items() if v is not None and v != () and v != []}
        for key, value in changes.items():
            if key not in {f.name for f in dataclasses.fields(self)}:
                raise ConfigError(f"no recipe field {key!r}")
            changes[key] = _typed(f"option --{key.replace('_', '-')}", key, value,
                                  next(f.type for f in dataclasses.fields(self) if f.name == key))
        return dataclasses.replace(self, **changes)

    @property
    def measures(self) -> bool:
        """Whether running it measures on a device (an objective or the pruning's LUT spec says
        `=measure`): such a run needs a store."""
        return any("=measure" in o for o in self.objectives) or "=measure" in (self.prune or "")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}

    def _relative_to(self, base: Path) -> Recipe:
        def resolve(p: str | None) -> str | None:
            if p is None:
                return None
            p = os.path.expandvars(os.path.expanduser(p))
            return p if os.path.isabs(p) else str((base / p).resolve())

        def resolve_spec(spec: str) -> str:
            m = _PATH_IN_SPEC.match(spec)
            return m.group(1) + resolve(m.group(2)) if m else spec

        prune = self.prune
        if prune and ":" in prune:
            share, _, spec = prune.partition(":")
            prune = f"{share}:{resolve_spec(spec)}"
        return dataclasses.replace(self, objectives=[resolve_spec(o) for o in self.objectives],
                                   warm_start=resolve(self.warm_start), popdb=[resolve(p) for p in self.popdb],
                                   reference=resolve(self.reference), prune=prune)


def _typed(source: str, key: str, value: Any, annotation: str) -> Any:
    """`value` checked against the field's annotation; the message names the field."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{source}: field {key!r} must be {what}, got {value!r}")

    if "list[str]" in annotation:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if "dict[str, str]" in annotation and isinstance(value, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise bad("a string or a mapping of names to strings")
        return dict(value)
    if annotation.startswith("dict"):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return value
    if value is None and "None" in annotation:
        return None
    if not isinstance(value, str):
        raise bad("a string")
    return value


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up, first to last: $HWNAS_RECIPE_DIRS, ./search, the user
    config folder's search/, the bundled recipes (`hwnas_deploy.resources`)."""
    return [d for d, _ in search_path(RECIPE_DIRS_ENV, "search")]


def available_recipes() -> dict[str, tuple[Path, str]]:
    """name -> (its YAML file, where it comes from), the first found of each name."""
    found: dict[str, tuple[Path, str]] = {}
    for d, origin in search_path(RECIPE_DIRS_ENV, "search"):
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, (p, origin))
    return found


def recipe_names() -> list[str]:
    return sorted(available_recipes())


def find_recipe(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"{p}: no such recipe file")
        return p
    for d in recipe_dirs():
        if (d / f"{p}.yaml").exists():
            return d / f"{p}.yaml"
    raise ConfigError(f"no recipe {str(name_or_path)!r}; recipes: {', '.join(recipe_names()) or 'none'} "
                      f"(or give a YAML path)")


@dataclass
class Prepared:
    """A recipe checked and turned into objects: what `run_recipe` runs."""

    recipe: Recipe
    space: SearchSpace
    objectives: list[Objective]
    constraints: list[Constraint]
    warm: list[dict] | None
    allowed: list[list[int]] | None
    reference: list[dict] | None


def prepare(recipe: Recipe, store=None) -> Prepared:
    """Check every field and build the objects; nothing is measured or searched yet (except what a
    `prune` objective measures to rank choices)."""
    from hwnas_deploy.search.algorithms import ALGORITHMS

    src = recipe.source
    try:
        space = get_space(recipe.space)
    except HwnasError as exc:
        raise ConfigError(f"{src}: field 'space': {exc}") from None
    if recipe.tactic not in TACTICS:
        raise ConfigError(f"{src}: field 'tactic' is {recipe.tactic!r}; tactics: {', '.join(TACTICS)}")
    if recipe.algorithm not in ALGORITHMS:
        raise ConfigError(f"{src}: field 'algorithm' is {recipe.algorithm!r}; algorithms: {', '.join(ALGORITHMS)}")
    for key, low in (("population", 4), ("generations", 1), ("budget", 1)):
        if getattr(recipe, key) < low:
            raise ConfigError(f"{src}: field {key!r} must be at least {low}, got {getattr(recipe, key)}")
    if recipe.device is not None:
        from hwnas_deploy.devices import load_profile

        try:
            prof = load_profile(recipe.device)
            if recipe.runtime is not None:
                prof.require_runtime(recipe.runtime)
        except HwnasError as exc:
            raise ConfigError(f"{src}: field 'device': {exc}") from None
    objectives = []
    for i, spec in enumerate(recipe.objectives):
        try:
            objectives.append(parse_objective(spec, space, store, recipe.device, recipe.runtime, lab=recipe.lab))
        except HwnasError as exc:
            raise ConfigError(f"{src}: objectives[{i}]: {exc}") from None
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise ConfigError(f"{src}: field 'objectives': names must differ, got {names}")
    constraints = []
    for i, spec in enumerate(recipe.constraints):
        try:
            c = parse_constraint(spec)
        except HwnasError as exc:
            raise ConfigError(f"{src}: constraints[{i}]: {exc}") from None
        if c.name not in names and c.name not in COUNTS:
            raise ConfigError(f"{src}: constraints[{i}] {spec!r}: {c.name!r} is not an objective "
                              f"({', '.join(names)}) nor a count ({', '.join(COUNTS)})")
        _check_possible(src, i, spec, c, space, objectives)
        constraints.append(c)
    measured = [o for o in objectives if o.measured]
    if recipe.tactic in ("validated", "full", "concurrent") and not measured:
        raise ConfigError(f"{src}: tactic {recipe.tactic!r} needs an objective measured on a device "
                          "(NAME=measure:DEVICE/RUNTIME, or NAME=measure with the recipe's device and runtime)")
    _check_estimator(src, recipe.estimator, [o.name for o in measured])
    if recipe.tactic in ("full", "concurrent") and recipe.budget < recipe.population + (4 if recipe.tactic == "full"
                                                                                        else 0):
        raise ConfigError(f"{src}: field 'budget' ({recipe.budget}) must cover a population ({recipe.population})"
                          + (" plus at least 4 training validations" if recipe.tactic == "full" else ""))
    if recipe.tactic == "warm-start" and not recipe.warm_start:
        raise ConfigError(f"{src}: tactic 'warm-start' needs field 'warm_start' (an earlier run's front.json)")
    if recipe.export is not None:
        _check_export(src, recipe.export)
    warm = _read_warm(recipe.warm_start, space, src) if recipe.warm_start else None
    reference = None
    if recipe.reference:
        reference = _read_front(recipe.reference, src, "reference")["front"]
        missing = [n for n in names if reference and n not in reference[0]]
        if missing:
            raise ConfigError(f"{src}: field 'reference': the front has no values of {', '.join(missing)}")
    allowed = _reduced(recipe, space, store)
    return Prepared(recipe, space, objectives, constraints, warm, allowed, reference)


def _check_possible(src: str, i: int, spec: str, c: Constraint, space: SearchSpace,
                    objectives: Sequence[Objective]) -> None:
    """Refuse a constraint no network can meet, before anything is measured: counts against the
    smallest networks of the space, a limit of zero or below on what is always positive (a
    measured latency, counts), and below zero on any other minimised quantity."""
    objective = next((o for o in objectives if o.name == c.name), None)
    positive = objective is None or objective.measured or objective.source.strip() in COUNTS
    if (c.limit <= 0 if positive else c.limit < 0) and (objective is None or not objective.maximise):
        raise ConfigError(f"{src}: constraints[{i}] {spec!r} is impossible: {c.name} is always "
                          f"{'positive' if positive else 'zero or more'}")
    if c.name in COUNTS and (objective is None or objective.source.strip() in COUNTS):
        rng = np.random.default_rng(0)
        candidates = [space.from_genes(space.gene_bounds()[0])] + [space.sample(rng) for _ in range(200)]
        least = min(COUNTS[c.name](space, cfg) for cfg in candidates)
        if least > c.limit:
            raise ConfigError(f"{src}: constraints[{i}] {spec!r} is impossible: the smallest {c.name} of "
                              f"{space.name}'s sub-networks is {least:.6g}")


def _check_estimator(src: str, estimator: str | dict[str, str], measured: Sequence[str]) -> None:
    """The predictors `full` / `concurrent` refit: known names, and per-objective keys that are
    measured objectives."""
    from hwnas_deploy.predictors.estimators import estimator_spec

    chosen = estimator if isinstance(estimator, dict) else {"": estimator}
    for objective, name in chosen.items():
        if objective and objective not in measured:
            raise ConfigError(f"{src}: field 'estimator': {objective!r} is not a measured objective "
                              f"(measured: {', '.join(measured) or 'none'})")
        try:
            spec = estimator_spec(name)
        except HwnasError as exc:
            raise ConfigError(f"{src}: field 'estimator': {exc}") from None
        if spec.needs_lut or name.startswith("nn-meter:"):
            raise ConfigError(f"{src}: field 'estimator': {name!r} is not refitted from validations (it is built on "
                              "a LUT or pre-trained); use ridge, svr, gp, gbt, rf, costs or macs")


def _check_export(src: str, export: dict) -> None:
    from hwnas_deploy.export import FORMATS

    unknown = sorted(set(export) - {"pick", "formats"})
    if unknown:
        raise ConfigError(f"{src}: field 'export' has unknown key {unknown[0]!r}; keys: pick, formats")
    formats = export.get("formats", [])
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list) or not formats:
        raise ConfigError(f"{src}: field 'export.formats' must be a non-empty list of formats ({', '.join(FORMATS)})")
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"{src}: field 'export.formats' has {f!r}; formats: {', '.join(FORMATS)}")
    pick = export.get("pick", "knee")
    if not isinstance(pick, (str, int)):
        raise ConfigError(f"{src}: field 'export.pick' must be knee, all, an index or a config hash, got {pick!r}")


def _read_front(path: str, src: str, key: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{src}: field {key!r}: cannot read {path} ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("front"), list):
        raise ConfigError(f"{src}: field {key!r}: {path} is not a front.json (no 'front' list)")
    return data


def _read_warm(path: str, space: SearchSpace, src: str) -> list[dict]:
    from hwnas_deploy.spaces import load_configs

    text = Path(path).read_text() if Path(path).exists() else None
    if text is None:
        raise ConfigError(f"{src}: field 'warm_start': no such file {path}")
    try:
        return [space.validate(r["config"]) for r in json.loads(text)["front"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    except HwnasError as exc:
        raise ConfigError(f"{src}: field 'warm_start': {path}: {exc}") from None
    try:
        return load_configs(path, space)
    except HwnasError as exc:
        raise ConfigError(f"{src}: field 'warm_start': {exc}") from None


def _reduced(recipe: Recipe, space: SearchSpace, store) -> list[list[int]] | None:
    """`allowed` choices from popdb / prune (both: the intersection, never empty), or None."""
    from hwnas_deploy import datafile
    from hwnas_deploy.search.reduction import efficiency, popdb
    from hwnas_deploy.search.run import FORMAT, VERSION

    allowed = None
    if recipe.popdb:
        configs = []
        for f in recipe.popdb:
            configs += [row["config"] for row in datafile.read(f, FORMAT, VERSION, "search checkpoint")[
                "evaluated"].values()]
        allowed = popdb(space, configs, recipe.popdb_threshold)
    if recipe.prune:
        share, _, spec = recipe.prune.partition(":")
        try:
            share = float(share)
        except ValueError:
            raise ConfigError(f"{recipe.source}: field 'prune' is {recipe.prune!r}; expected SHARE:OBJECTIVE, e.g. "
                              "0.25:latency=lut:lut.json") from None
        pruned = efficiency(space, parse_objective(spec, space, store, recipe.device, recipe.runtime,
                                                   lab=recipe.lab).evaluate, share)
        allowed = pruned if allowed is None else [sorted(set(a) & set(b)) or a for a, b in zip(allowed, pruned,
                                                                                                strict=True)]
    return allowed
