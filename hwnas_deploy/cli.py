"""`hwnas`: the command line. Thin: every command is one library call."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence

import click

from hwnas_deploy.errors import HwnasError


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _finite(value):
    """JSON has no Infinity/NaN: such floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _read_configs(configs_file: str) -> list[dict]:
    """Configs from a JSON-lines file; an error names the file and line."""
    from hwnas_deploy.spaces import load_config

    configs = []
    for n, line in enumerate(open(configs_file).read().splitlines(), 1):
        if line.strip():
            try:
                configs.append(load_config(line))
            except HwnasError as exc:
                raise type(exc)(f"{configs_file} line {n}: {exc}") from None
    return configs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hwnas-deploy")
def cli() -> None:
    """Hardware-aware NAS that ends on real devices."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the spaces' parameters as JSON.")
def spaces(as_json: bool) -> None:
    """List the search spaces."""
    from hwnas_deploy.spaces import get_space, space_names

    described = [get_space(n).describe() for n in space_names()]
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    rows = [
        {
            "space": d["name"],
            "genes": d["genes"],
            "parameters": ", ".join(f"{k}{'[' + str(p['length']) + ']' if p['length'] > 1 else ''}"
                                    for k, p in d["params"].items()),
        }
        for d in described
    ]
    click.echo(_table(rows, ["space", "genes", "parameters"]))


@cli.command()
@click.option("--space", "space_name", required=True, help="Search space name (see `hwnas spaces`).")
@click.option("-n", "count", default=1, show_default=True, help="How many distinct sub-networks.")
@click.option("--seed", default=0, show_default=True)
def sample(space_name: str, count: int, seed: int) -> None:
    """Print random sub-network configs (one JSON per line) with their MACs, params and peak SRAM."""
    from hwnas_deploy.spaces import get_space

    sp = get_space(space_name)
    for cfg in sp.sample_unique(count, seed):
        click.echo(
            json.dumps(
                {
                    "config": cfg,
                    "hash": sp.config_hash(cfg),
                    "macs": sp.macs(cfg),
                    "params": sp.params_count(cfg),
                    "peak_activation_bytes_int8": sp.peak_activation_bytes(cfg),
                }
            )
        )


@cli.command()
def devices() -> None:
    """List the device profiles found (./device_profiles, $HWNAS_PROFILE_DIRS, the shipped ones)."""
    from hwnas_deploy.devices import available_profiles, load_profile

    rows = []
    for name, path in available_profiles().items():
        try:
            p = load_profile(path)
            rows.append({"device": name, "kind": p.kind, "runtimes": ",".join(p.runtimes), "profile": str(path)})
        except HwnasError as exc:
            rows.append({"device": name, "kind": "INVALID", "runtimes": str(exc), "profile": str(path)})
    click.echo(_table(rows, ["device", "kind", "runtimes", "profile"]))


@cli.command()
@click.option("--space", "space_name", required=True)
@click.option("--config", "config_text", required=True, help="Config as JSON, or @file.json.")
@click.option("--format", "fmt", required=True, help="onnx | tflite | tflite-int8 | tvm | blob | blob-fp32 | c")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--target", default="host", show_default=True, help="tvm only: host | aarch64-linux-gnu")
@click.option("--batch", default=1, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the comparison with torch.")
def export(space_name: str, config_text: str, fmt: str, out_dir: str, target: str, batch: int, no_verify: bool) -> None:
    """Export one sub-network to a deployable artifact (checked against torch)."""
    from hwnas_deploy.export import export_subnet
    from hwnas_deploy.spaces import get_space, load_config

    sp = get_space(space_name)
    art = export_subnet(sp, load_config(config_text), fmt, out_dir, target=target, batch=batch, verify=not no_verify)
    click.echo(json.dumps({k: art.to_dict()[k] for k in ("format", "path", "sha256", "target", "max_abs_error",
                                                         "export_seconds")}))


@cli.command(name="profile")
@click.option("--device", required=True, help="Device profile name or YAML path (see `hwnas devices`).")
@click.option("--space", "space_name", required=True)
@click.option("--samples", default=20, show_default=True, help="Number of distinct sub-networks.")
@click.option("--runtime", required=True, help="onnxruntime | tflite | tflite-int8 | tvm | firmware | firmware-fp32")
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
@click.option("--seed", default=0, show_default=True, help="Sub-networks are drawn from this seed.")
@click.option("--threads", type=int, default=None, help="Override the profile's thread count.")
@click.option("--batch", type=int, default=None, help="Override the profile's batch size.")
@click.option("--force", is_flag=True, help="Measure again what the store already has.")
@click.option("--artifacts", default=None, help="Folder for exported artifacts [beside the database].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--fit", "only_fitting", is_flag=True,
              help="Draw only sub-networks whose int8 footprint fits the device's SRAM/flash budget.")
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Measure these configs (JSON lines, one config per line) instead of sampling.")
@click.option("--rounds", default=1, show_default=True,
              help="Measure every sub-network this many times, one round over all after the other "
                   "(predictors take the median over rounds).")
def profile_cmd(device, space_name, samples, runtime, db, seed, threads, batch, force, artifacts, quiet,
                only_fitting, configs_file, rounds) -> None:
    """Measure sub-networks of a space on a device and store the results (resumable)."""
    from hwnas_deploy.profiling import profile
    from hwnas_deploy.store import Store

    configs = _read_configs(configs_file) if configs_file else None
    with Store(db) as store:
        report = profile(
            device, space_name, samples, runtime, store, seed=seed, threads=threads, batch=batch,
            force=force, artifacts_dir=artifacts, progress=not quiet, only_fitting=only_fitting, configs=configs,
            rounds=rounds,
        )
    for config_hash, reason in report.unfit.items():
        click.echo(f"{config_hash}: does not fit: {reason}", err=True)
    click.echo(report.line() + f"; store: {store.url}")
    if report.interrupted:
        click.echo("interrupted: finished measurements are stored; run the same command again to resume", err=True)
        sys.exit(130)
    if report.failed:
        sys.exit(1)


@cli.command()
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
@click.option("--device", default=None)
@click.option("--space", "space_name", default=None)
@click.option("--runtime", default=None)
@click.option("--rows", is_flag=True, help="One row per measurement instead of a summary per group.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG of latency vs MACs (with Kendall tau per series).")
def show(db, device, space_name, runtime, rows, as_json, plot) -> None:
    """Show what the store holds."""
    from hwnas_deploy.store import Store

    with Store(db) as store:
        if plot:
            from hwnas_deploy.report import latency_vs_macs

            data = store.measurements(device=device, space=space_name, runtime=runtime)
            if data:
                click.echo(f"wrote {latency_vs_macs(data, plot)}", err=True)
        if rows or device or space_name or runtime:
            data = store.measurements(device=device, space=space_name, runtime=runtime)
            for r in data:
                r.pop("samples_ms")
            cols = ["device", "space", "config_hash", "runtime", "threads", "batch", "median_ms", "p90_ms",
                    "iqr_ms", "n", "macs"]
        else:
            data = store.overview()
            cols = ["device", "space", "runtime", "threads", "batch", "subnets", "min_ms", "median_ms", "max_ms",
                    "tau_macs"]
        if as_json:
            click.echo(json.dumps(_finite(data), indent=2, default=str))
        elif not data:
            click.echo(f"{store.url}: no measurements")
        else:
            click.echo(_table(data, cols))


@cli.group()
def firmware() -> None:
    """Build and flash the Cortex-M profiling firmware."""


@firmware.command("build")
@click.option("--board", default="qemu-mps2-an500", show_default=True, help="A folder of firmware/boards/.")
def firmware_build(board: str) -> None:
    """Compile the firmware for a board with arm-none-eabi-gcc (an over-budget build fails to link)."""
    from hwnas_deploy.sim.qemu import build_firmware

    click.echo(str(build_firmware(board)))


@firmware.command("flash")
@click.option("--board", required=True, help="stm32f746-disco | nucleo-h743zi (ST-LINK attached)")
def firmware_flash(board: str) -> None:
    """Build and write the firmware to a board over ST-LINK (st-flash or pyocd)."""
    from hwnas_deploy.sim.qemu import flash_firmware

    click.echo(flash_firmware(board))


@cli.group()
def sim() -> None:
    """Simulated twins of real devices (QEMU Cortex-M7 board)."""


@sim.command("start")
@click.argument("device")
@click.option("--port", type=int, default=None, help="TCP port for the board's serial line [a free one].")
def sim_start(device: str, port: int | None) -> None:
    """Start a device's twin in the background and print the serial URL to use."""
    from hwnas_deploy.sim.registry import start

    click.echo(start(device, port))


@sim.command("stop")
@click.argument("device")
def sim_stop(device: str) -> None:
    """Stop a twin started with `hwnas sim start`."""
    from hwnas_deploy.sim.registry import stop

    click.echo(stop(device))


@sim.command("list")
def sim_list() -> None:
    """Twins running in the background."""
    from hwnas_deploy.sim.registry import running

    rows = running()
    click.echo(_table(rows, ["device", "pid", "url"]) if rows else "no twins running")


@cli.group()
def predictor() -> None:
    """Latency / accuracy predictors fitted on measurements: fit, eval, predict."""


def _data_options(f):
    """Where the training rows come from: the store (--db/--device/--runtime) or CSV files."""
    options = [
        click.option("--space", "space_name", required=True),
        click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite]."),
        click.option("--device", default=None, help="With --db: the device measured."),
        click.option("--runtime", default=None, help="With --db: the runtime measured."),
        click.option("--threads", default=1, show_default=True),
        click.option("--batch", default=1, show_default=True),
        click.option("--csv", "csv_paths", multiple=True, type=click.Path(exists=True),
                     help="CSV file(s) or folder(s) with a config column instead of the store (repeatable)."),
        click.option("--target", default=None, help="With --csv: the column to predict."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _dataset(space_name, db, device, runtime, threads, batch, csv_paths, target):
    from hwnas_deploy.predictors import from_csv, from_store
    from hwnas_deploy.store import Store

    if csv_paths:
        if not target:
            raise click.UsageError("--csv needs --target (the column to predict)")
        return from_csv(list(csv_paths), space_name, target)
    if not (device and runtime):
        raise click.UsageError("give --device and --runtime (rows from the store), or --csv and --target")
    with Store(db) as store:
        return from_store(store, device, space_name, runtime, threads, batch)


@predictor.command("fit")
@_data_options
@click.option("--estimator", default="ridge", show_default=True,
              help="ridge | svr | gbt | rf | kernels | hybrid | costs | macs (kernels, hybrid: with --lut)")
@click.option("--params", "params_text", default=None, help="Hyper-parameters as JSON, e.g. '{\"alpha\": 0.5}'.")
@click.option("--lut", "lut_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The device's LUT (`hwnas lut build`), for the kernels and hybrid estimators.")
@click.option("--train-size", type=int, default=None, help="Fit on this many random rows [all].")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Predictor file (JSON).")
def predictor_fit(space_name, db, device, runtime, threads, batch, csv_paths, target, estimator, params_text,
                  lut_path, train_size, seed, out_path) -> None:
    """Fit a predictor and save it as JSON (data, not a pickle)."""
    import numpy as np

    from hwnas_deploy.errors import PredictorError
    from hwnas_deploy.lut import LatencyLUT
    from hwnas_deploy.predictors import Predictor

    data = _dataset(space_name, db, device, runtime, threads, batch, csv_paths, target)
    try:
        params = json.loads(params_text) if params_text else None
    except json.JSONDecodeError as exc:
        raise PredictorError(f"--params is not JSON: {exc}") from None
    if train_size:
        if not 2 <= train_size <= len(data):
            raise PredictorError(f"--train-size {train_size}: the data has {len(data)} rows")
        data = data.subset(np.random.default_rng(seed).permutation(len(data))[:train_size])
    lut = LatencyLUT.load(lut_path) if lut_path else None
    pred = Predictor(estimator, params, lut=lut).fit(data.configs, data.y, data.space, data.target, data.source)
    path = pred.save(out_path)
    click.echo(f"{estimator} predictor of {data.target} on {data.space}, fitted on {len(data)} rows: {path}")


@predictor.command("eval")
@_data_options
@click.option("--estimators", default="ridge,svr,gbt,rf,costs,macs", show_default=True,
              help="Comma-separated; add kernels,hybrid with --lut.")
@click.option("--lut", "lut_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The device's LUT (`hwnas lut build`), for the kernels and hybrid estimators.")
@click.option("--train-size", type=int, required=True, help="Training rows per estimator.")
@click.option("--test-size", type=int, default=None, help="Held-out rows [all the others].")
@click.option("--curve", default=None, help="Learning curve over these training sizes, e.g. 50,100,200,500.")
@click.option("--trials", default=5, show_default=True, help="Random splits per learning-curve point.")
@click.option("--seed", default=0, show_default=True)
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write report.json, scatter.png (and learning_curve.png) here.")
def predictor_eval(space_name, db, device, runtime, threads, batch, csv_paths, target, estimators, lut_path,
                   train_size, test_size, curve, trials, seed, report_dir) -> None:
    """Held-out accuracy of each estimator on the same split (and learning curves)."""
    from pathlib import Path

    from hwnas_deploy.lut import LatencyLUT
    from hwnas_deploy.predictors.evaluation import (
        holdout, learning_curve, learning_curve_plot, markdown_table, scatter_plot,
    )

    data = _dataset(space_name, db, device, runtime, threads, batch, csv_paths, target)
    names = [e.strip() for e in estimators.split(",") if e.strip()]
    lut = LatencyLUT.load(lut_path) if lut_path else None
    evals = holdout(data, names, train_size, test_size, seed, lut=lut)
    click.echo(f"{data.target} of {data.space} ({data.source}): {len(data)} distinct sub-networks")
    click.echo(markdown_table(evals))
    curves = None
    if curve:
        sizes = [int(v) for v in curve.split(",")]
        curves = learning_curve(data, names, sizes, trials, test_size, seed, lut=lut)
        click.echo("\nlearning curve (mean +- std over %d splits): MAPE %% / Kendall tau" % trials)
        for e, by_size in curves.items():
            cells = [f"{s}: {v['mape'][0]:.2f}+-{v['mape'][1]:.2f} / {v['tau'][0]:.3f}+-{v['tau'][1]:.3f}"
                     for s, v in sorted(by_size.items())]
            click.echo(f"  {e}: " + ", ".join(cells))
    if report_dir:
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = {"space": data.space, "target": data.target, "source": data.source, "rows": len(data),
                  "seed": seed, "holdout": [{"estimator": e.estimator, "train": e.train_size, "test": e.test_size,
                                            **e.metrics} for e in evals]}
        scatter_plot(evals, out / "scatter.png", data.target)
        if curves:
            report["learning_curve"] = {e: {str(s): v for s, v in c.items()} for e, c in curves.items()}
            learning_curve_plot(curves, out / "learning_curve.png")
        (out / "report.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
        click.echo(f"report: {out}")


@predictor.command("predict")
@click.option("--predictor", "path", required=True, type=click.Path(dir_okay=False), help="A file from `fit`.")
@click.option("--config", "config_text", default=None, help="One config as JSON, or @file.json.")
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON lines, one config per line.")
def predictor_predict(path, config_text, configs_file) -> None:
    """Predict the target of configs with a saved predictor."""
    from hwnas_deploy.predictors import Predictor
    from hwnas_deploy.spaces import get_space, load_config

    pred = Predictor.load(path)
    if not (config_text or configs_file):
        raise click.UsageError("give --config or --configs")
    configs = [load_config(config_text)] if config_text else []
    if configs_file:
        configs += _read_configs(configs_file)
    sp = get_space(pred.space)
    for cfg, y in zip(configs, pred.predict(configs), strict=True):
        click.echo(f"{sp.config_hash(cfg)}  {pred.target} {y:.6g}")


@cli.group()
def lut() -> None:
    """Latency look-up tables: blocks measured alone, summed per sub-network."""


@lut.command("build")
@click.option("--device", required=True)
@click.option("--space", "space_name", required=True)
@click.option("--runtime", required=True)
@click.option("--samples", default=100, show_default=True, help="Cover the blocks of this many random sub-networks.")
@click.option("--seed", default=0, show_default=True)
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Cover the blocks of these configs (JSON lines) instead.")
@click.option("--threads", type=int, default=None)
@click.option("--batch", type=int, default=None)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="LUT file (JSON); an existing one is extended (resumable).")
@click.option("--quiet", is_flag=True)
def lut_build(device, space_name, runtime, samples, seed, configs_file, threads, batch, out_path, quiet) -> None:
    """Measure every distinct block of the sub-networks on the device."""
    from hwnas_deploy.lut import build_lut
    from hwnas_deploy.spaces import get_space

    configs = _read_configs(configs_file) if configs_file else get_space(space_name).sample_unique(samples, seed)
    table = build_lut(device, space_name, runtime, configs, out_path, threads=threads, batch=batch,
                      progress=not quiet)
    click.echo(f"{len(table.entries)} blocks of {table.space} on {table.device}/{table.runtime}: {out_path}")


@lut.command("compare")
@click.option("--lut", "lut_path", required=True, type=click.Path(dir_okay=False))
@click.option("--db", default=None, help="Store with whole-network measurements on the LUT's device and runtime.")
@click.option("--calibrate", "n_calibrate", default=10, show_default=True,
              help="Fit the whole-network term on this many measured networks; compare on the others.")
@click.option("--slope", is_flag=True, help="Fit a + b * sum (least squares) instead of the offset a alone.")
@click.option("--seed", default=0, show_default=True)
@click.option("--save", is_flag=True, help="Keep the fitted calibration in the LUT file.")
def lut_compare(lut_path, db, n_calibrate, slope, seed, save) -> None:
    """How far block sums (raw and calibrated) sit from whole-network measurements."""
    import numpy as np

    from hwnas_deploy.lut import LatencyLUT, compare
    from hwnas_deploy.predictors import from_store
    from hwnas_deploy.store import Store

    table = LatencyLUT.load(lut_path)
    with Store(db) as store:
        data = from_store(store, table.device, table.space, table.runtime, table.threads, table.batch)
    keep = [i for i, c in enumerate(data.configs) if not table.missing([c])]
    if len(keep) < n_calibrate + 3:
        raise HwnasError(f"only {len(keep)} measured networks are fully covered by the LUT; need "
                         f"{n_calibrate + 3} (build it over the measured configs with --configs)")
    order = np.random.default_rng(seed).permutation(keep)
    cal, test = data.subset(order[:n_calibrate]), data.subset(order[n_calibrate:])
    table.calibrate(cal.configs, cal.y, slope=slope)
    report = compare(table, test.configs, test.y)
    a, b = table.calibration
    click.echo(f"{table.space} on {table.device}/{table.runtime}: {len(table.entries)} blocks; calibrated on "
               f"{len(cal)} networks: whole = {a:.4g} ms + {b:.4f} x block sum; compared on {len(test)} others")
    click.echo(f"block sums are {report['mean_sum_over_measured']['ratio']:.3f}x the measured latency on average")
    click.echo("| prediction | MAPE % | Kendall tau | within 5 % | within 10 % |\n|---|---:|---:|---:|---:|")
    for name in ("block_sum", "calibrated"):
        m = report[name]
        click.echo(f"| {name} | {m['mape']:.2f} | {m['tau']:.3f} | {m['within5']:.1f} | {m['within10']:.1f} |")
    if save:
        table.save(lut_path)



def _reduced_space(sp, popdb_files, threshold, prune_spec, store):
    """`allowed` choices from --popdb / --prune (both: the intersection, never empty), or None."""
    from hwnas_deploy.search import parse_objective
    from hwnas_deploy.search.reduction import efficiency, popdb

    allowed = None
    if popdb_files:
        from hwnas_deploy import datafile
        from hwnas_deploy.search.run import FORMAT, VERSION

        configs = []
        for f in popdb_files:
            configs += [row["config"] for row in datafile.read(f, FORMAT, VERSION, "search checkpoint")[
                "evaluated"].values()]
        allowed = popdb(sp, configs, threshold)
    if prune_spec:
        share, _, spec = prune_spec.partition(":")
        try:
            share = float(share)
        except ValueError:
            raise click.UsageError(f"--prune {prune_spec!r}: expected SHARE:OBJECTIVE, e.g. 0.25:latency=lut:F") \
                from None
        pruned = efficiency(sp, parse_objective(spec, sp, store).evaluate, share)
        allowed = pruned if allowed is None else [sorted(set(a) & set(b)) or a for a, b in zip(allowed, pruned,
                                                                                                strict=True)]
    return allowed


@cli.command(name="search")
@click.option("--space", "space_name", required=True)
@click.option("--objective", "objective_specs", multiple=True, required=True,
              help="macs | params | sram | NAME=predictor:FILE | NAME=lut:FILE (repeatable; NAME acc* is "
                   "maximised).")
@click.option("--constraint", "constraint_specs", multiple=True, help="NAME<=LIMIT, e.g. latency<=50 (repeatable).")
@click.option("--algorithm", default="nsga2", show_default=True, help="nsga2 | agemoea | unsga3 | random")
@click.option("--pop", "pop_size", default=50, show_default=True)
@click.option("--generations", default=20, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="front.json, front.png, report.html and checkpoint.json (a killed search resumes from it).")
@click.option("--warm-start", "warm_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="First population from an earlier run's front.json (or JSON lines of configs).")
@click.option("--db", default=None, help="Store for measure: objectives [$HWNAS_DB or hwnas.sqlite].")
@click.option("--tactic", default="plain", show_default=True, type=click.Choice(["plain", "concurrent"]),
              help="concurrent: measure a population, fit a predictor of the measure: objective on all "
                   "measured, search on it, measure its front next, until --budget measurements.")
@click.option("--budget", default=100, show_default=True, help="concurrent: real measurements in all.")
@click.option("--estimator", default="gbt", show_default=True, help="concurrent: the predictor refitted.")
@click.option("--popdb", "popdb_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Reduce the space to the choices earlier runs' networks used (their checkpoint.json; repeatable).")
@click.option("--popdb-threshold", default=0.05, show_default=True)
@click.option("--prune", "prune_spec", default=None,
              help="SHARE:OBJECTIVE, e.g. 0.25:latency=lut:lut.json: drop each gene's least efficient share of "
                   "choices (parameters per latency).")
@click.option("--reference", "reference_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A reference front.json: the history adds the generational distance to it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def search_cmd(space_name, objective_specs, constraint_specs, algorithm, pop_size, generations, seed, out_dir,
               warm_file, db, tactic, budget, estimator, popdb_files, popdb_threshold, prune_spec, reference_file,
               quiet) -> None:
    """Search a space for the Pareto front of the objectives under the constraints (resumable)."""
    from pathlib import Path

    from hwnas_deploy.search import parse_constraint, parse_objective, search
    from hwnas_deploy.search.run import html_report, plot_result
    from hwnas_deploy.spaces import get_space

    from hwnas_deploy.store import Store

    sp = get_space(space_name)
    store = Store(db) if any("=measure:" in o for o in objective_specs) else None
    if store is not None:
        click.get_current_context().call_on_close(store.close)
    objectives = [parse_objective(o, sp, store) for o in objective_specs]
    constraints = [parse_constraint(c) for c in constraint_specs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    warm = None
    if warm_file:
        text = Path(warm_file).read_text()
        try:
            warm = [sp.validate(r["config"]) for r in json.loads(text)["front"]]
        except (json.JSONDecodeError, KeyError, TypeError):
            warm = _read_configs(warm_file)
    allowed = _reduced_space(sp, popdb_files, popdb_threshold, prune_spec, store)
    if allowed is not None:
        full = [int(u) + 1 for u in sp.gene_bounds()[1]]
        click.echo(f"reduced space: {sum(map(len, allowed))} of {sum(full)} gene choices kept", err=True)
    if tactic == "concurrent":
        from hwnas_deploy.search.tactics import concurrent

        if allowed is not None:
            raise click.UsageError("--tactic concurrent does not take a reduced space yet")

        expensive = [o for o, spec in zip(objectives, objective_specs, strict=True) if "=measure:" in spec]
        if len(expensive) != 1:
            raise click.UsageError("--tactic concurrent needs exactly one NAME=measure:DEVICE/RUNTIME objective")
        result = concurrent(sp, expensive[0], [o for o in objectives if o is not expensive[0]], constraints,
                            budget, pop_size, generations, estimator, seed, warm, progress=not quiet)
    else:
        reference = json.loads(Path(reference_file).read_text())["front"] if reference_file else None
        result = search(sp, objectives, constraints, algorithm, pop_size, generations, seed,
                        checkpoint=out / "checkpoint.json", progress=not quiet, warm_start=warm, allowed=allowed,
                        reference=reference)
    (out / "front.json").write_text(json.dumps({"space": sp.name, "objectives": list(objective_specs),
                                                "constraints": list(constraint_specs), "algorithm": algorithm,
                                                "evaluations": result.evaluations, "history": result.history,
                                                "front": result.front}, indent=1) + "\n")
    plot_result(result, objectives, out / "front.png")
    html_report(result, objectives, out / "front.png", out / "report.html",
                f"{sp.name}: {', '.join(objective_specs)}" + (f" | {', '.join(constraint_specs)}" if constraint_specs
                                                               else ""))
    names = [o.name for o in objectives]
    if not result.front:
        click.echo(f"none of the {result.evaluations} networks evaluated meets {', '.join(constraint_specs)}", err=True)
        sys.exit(1)
    click.echo(f"{result.evaluations} networks evaluated; front of {len(result.front)}; hypervolume "
               f"{result.history[-1]['hypervolume']:.4f}: {out / 'front.json'}")
    for row in result.front[:10]:
        click.echo("  " + ", ".join(f"{n}={row[n]:.4g}" for n in names) + f"  {sp.config_hash(row['config'])}")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
