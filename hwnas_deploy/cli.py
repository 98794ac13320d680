"""`hwnas`: the command line. Thin: every command is one library call."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import click

from hwnas_deploy.datafile import finite
from hwnas_deploy.errors import ConfigError, HwnasError


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.0f}" if v.is_integer() and abs(v) >= 1000 else f"{v:.3f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


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
@click.option("-n", "count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many distinct sub-networks.")
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
    """List the device profiles found ($HWNAS_PROFILE_DIRS, ./device_profiles, the user config
    folder's device_profiles/, the bundled ones; the first of a name wins) and where each is from."""
    from hwnas_deploy.devices import available_profiles, load_profile

    rows = []
    for name, (path, origin) in available_profiles(with_origin=True).items():
        try:
            p = load_profile(path)
            rows.append({"device": name, "kind": p.kind, "runtimes": ",".join(p.runtimes), "from": origin,
                         "profile": str(path)})
        except HwnasError as exc:
            rows.append({"device": name, "kind": "INVALID", "runtimes": str(exc), "from": origin,
                         "profile": str(path)})
    click.echo(_table(rows, ["device", "kind", "runtimes", "from", "profile"]))


@cli.command()
@click.option("--strict", is_flag=True, help="Exit 1 when any piece is missing.")
@click.option("--json", "as_json", is_flag=True)
def doctor(strict, as_json) -> None:
    """Check every piece outside Python's own dependencies (compilers, QEMU, adb, the LiteRT
    converter environment, the optional extras, the bundled firmware, profiles and recipes): what
    each is needed for, and the command that installs a missing one."""
    from dataclasses import asdict

    from hwnas_deploy.doctor import checks

    found = checks()
    if as_json:
        click.echo(json.dumps([asdict(c) for c in found], indent=1))
    else:
        rows = [{"piece": c.piece, "status": "ok" if c.ok else "MISSING", "found": c.found} for c in found]
        click.echo(_table(rows, ["piece", "status", "found"]))
        missing = [c for c in found if not c.ok]
        click.echo(f"{len(found) - len(missing)} of {len(found)} pieces found")
        for c in missing:
            click.echo(f"  {c.piece}: needed for {c.needed_for}; install: {c.install}")
    if strict and any(not c.ok for c in found):
        sys.exit(1)


@cli.group()
def setup() -> None:
    """Install the pieces pip cannot (`hwnas doctor` says which are missing)."""


@setup.command("converter")
@click.option("--into", "dest", default=None, type=click.Path(file_okay=False),
              help="Where [the user cache folder's litert-converter].")
def setup_converter(dest) -> None:
    """Make the LiteRT converter's own environment (litert-torch and its pinned requirements:
    they cannot share the main environment), which TFLite and int8 firmware exports run in."""
    from hwnas_deploy.export.litert_env import create_converter_env

    python = create_converter_env(dest, log=lambda text: click.echo(text, err=True))
    click.echo(f"converter environment: {python}")


TUNING_DB_OPTION = click.option(
    "--tuning-db", "tuning_db", default="auto", show_default=True, metavar="FOLDER|auto|none",
    help="TVM's tuning database (`hwnas tune`): auto is $HWNAS_TUNING_DB, else tvm-tuning/ beside the store, "
         "used when it holds records for the target; none builds untuned.")


@cli.command()
@click.option("--space", "space_name", default=None, help="With --config: the sub-network's space.")
@click.option("--config", "config_text", default=None,
              help="Config as JSON, @file.json, or (nb201) an architecture string |op~0|+|...|.")
@click.option("--run", "run_dir", default=None, type=click.Path(), help="Or: a run folder of `hwnas search` ...")
@click.option("--pick", default="knee", show_default=True, help="... and which of its front: knee | all | INDEX | HASH")
@click.option("--format", "fmt", required=True,
              help="onnx | tflite | tflite-int8 | tvm | blob | blob-fp32 | c (comma-separated for several)")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [required with --config; RUN/artifacts with --run].")
@click.option("--target", default="host", show_default=True, help="tvm only: host | aarch64-linux-gnu")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the comparison with torch.")
@click.option("--model", "model_spec", default=None, metavar="FILE",
              help="Or: your own model, .onnx | .tflite | .pt2 | module.py:function | zoo:NAME.")
@click.option("--calibration", default=None, type=click.Path(exists=True),
              help="With --model: .npy file or folder of real inputs for int8 quantisation [random].")
@TUNING_DB_OPTION
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="tvm with a tuning database: the thread count the library is tuned for.")
def export(space_name, config_text, run_dir, pick, fmt, out_dir, target, batch, no_verify, model_spec,
           calibration, tuning_db, threads) -> None:
    """Export a sub-network (--space/--config), networks of a search's front (--run/--pick) or
    your own model (--model) to deployable artifacts, each checked against its source."""
    from hwnas_deploy.export import export_subnet
    from hwnas_deploy.spaces import get_space, load_config

    formats = [f.strip() for f in fmt.split(",") if f.strip()]
    tuning = None
    if "tvm" in formats:
        from hwnas_deploy.export.tvm_tuning import Tuning, open_database

        database = open_database(tuning_db)
        if database is not None and database.records(Tuning(database, threads).target(target)):
            tuning = Tuning(database, threads)
    if model_spec:
        if space_name or config_text or run_dir or not out_dir:
            raise click.UsageError("--model takes --format and --out (not --space, --config or --run)")
        from hwnas_deploy.models import load_model

        model = load_model(model_spec, calibration)
        for f in formats:
            model.check_format(f)
        for note in dict.fromkeys(n for f in formats for n in model.notes(f)):
            click.echo(note, err=True)
        arts = [model.export(f, out_dir, target=target, batch=batch, verify=not no_verify,
                             tuning=tuning if f == "tvm" else None) for f in formats]
    elif calibration:
        raise click.UsageError("--calibration goes with --model")
    elif run_dir:
        if space_name or config_text:
            raise click.UsageError("give either --run (with --pick) or --space and --config, not both")
        from hwnas_deploy.search.run_folder import export_picked

        arts = export_picked(run_dir, pick, formats, out_dir, verify=not no_verify)
    else:
        if not (space_name and config_text and out_dir):
            raise click.UsageError("give --space, --config and --out (or --run and --pick)")
        sp = get_space(space_name)
        arts = [export_subnet(sp, load_config(config_text), f, out_dir, target=target, batch=batch,
                              verify=not no_verify, tuning=tuning if f == "tvm" else None) for f in formats]
    for art in arts:
        line = {k: art.to_dict()[k] for k in ("format", "path", "sha256", "target", "max_abs_error", "export_seconds")}
        used = art.extra.get("tvm_tuning")
        if used:
            line["tuned_workloads"] = f"{used['tuned_workloads']}/{used['workloads']}"
            line["tuning_db"] = used["database"]
        click.echo(json.dumps(line))


@cli.command()
@click.option("--device", required=True, help="A device that runs TVM libraries: local-cpu, rpc-local, your "
              "board's profile (kind server or tvm-rpc).")
@click.option("--space", "space_name", default=None, help="Tune the workloads of this space's sub-networks ...")
@click.option("--samples", type=click.IntRange(min=1), default=20, show_default=True,
              help="... of this many of them, drawn from --seed ...")
@click.option("--seed", default=0, show_default=True)
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="... or of these configs (JSON lines).")
@click.option("--model", "model_specs", multiple=True, metavar="FILE",
              help="Or of your own model: .onnx | .pt2 | module.py:function | zoo:NAME (repeatable).")
@click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True,
              help="meta-schedule trials (measured candidates) per workload; tuning again tops workloads up to it.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="The thread count to tune for [the profile's]; code for 1 and 2 threads is tuned apart.")
@TUNING_DB_OPTION
@click.option("--db", default=None, help="The store whose side the tuning database sits by [$HWNAS_DB or "
              "hwnas.sqlite].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def tune(device, space_name, samples, seed, configs_file, model_specs, trials, threads, tuning_db, db,
         quiet) -> None:
    """Tune the TVM workloads of a space's sub-networks (or of your models) on a device, once:
    every later `export --format tvm` and `profile --runtime tvm` builds from the records
    (resumable: stop it any time, run it again)."""
    from hwnas_deploy.tuning import tune_networks, tune_space

    if bool(space_name) == bool(model_specs):
        raise click.UsageError("give --space (sub-networks) or --model (your own), one of the two")
    if tuning_db == "none":
        raise click.UsageError("--tuning-db none: tuning needs a database to write to (a folder, or leave it out)")
    options = {"trials": trials, "threads": threads, "tuning_db": None if tuning_db == "auto" else tuning_db,
               "store_url": db, "progress": not quiet}
    if model_specs:
        from hwnas_deploy.models import load_model

        run = tune_networks(device, [load_model(spec) for spec in model_specs], **options)
    else:
        from hwnas_deploy.spaces import load_configs

        configs = load_configs(configs_file) if configs_file else None
        run = tune_space(device, space_name, samples=samples, seed=seed, configs=configs, **options)
    report = run.report
    for w in report.per_workload:
        best = f"{w['best_us']:.1f} us" if w["best_us"] is not None else "no valid candidate"
        click.echo(f"  {w['name']}: {w['trials']} trials, best {best} ({w['seconds']:.0f} s)")
    shares = [n.tuned / n.workloads for n in run.networks if n.workloads]
    click.echo(report.line() + f"; database {report.database} (target {json.dumps(report.target, sort_keys=True)})")
    if shares:
        click.echo(f"networks: {len(run.networks)}, share of their workloads tuned: "
                   f"{100 * min(shares):.0f}-{100 * max(shares):.0f} %")
    if report.interrupted:
        sys.exit(130)


SENTINEL_OPTION = click.option(
    "--sentinel-every", "sentinel_every", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
    help="Measure a sentinel network this often and store its reading beside each measurement, for "
         "`--correct-drift` [the profile's: 5 s on host CPUs, 60 s on phones and RPC boards, never on MCU "
         "boards, which count cycles; 0: never].")


@cli.command(name="profile")
@click.option("--device", required=True, help="Device profile name or YAML path (see `hwnas devices`).")
@click.option("--space", "space_name", default=None, help="Sub-networks of this space (or give --model).")
@click.option("--model", "model_specs", multiple=True, metavar="FILE",
              help="Your own model instead: .onnx | .tflite | .pt2 | module.py:function | zoo:NAME (repeatable).")
@click.option("--calibration", default=None, type=click.Path(exists=True),
              help="With --model: .npy file or folder of real inputs for int8 quantisation [random].")
@click.option("--samples", type=click.IntRange(min=0), default=20, show_default=True,
              help="Number of distinct sub-networks.")
@click.option("--runtime", required=True, help="onnxruntime | tflite | tflite-int8 | tvm | firmware | firmware-fp32")
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
@click.option("--seed", default=0, show_default=True, help="Sub-networks are drawn from this seed.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Override the profile's thread count.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Override the profile's batch size.")
@click.option("--force", is_flag=True, help="Measure again what the store already has.")
@click.option("--artifacts", default=None, help="Folder for exported artifacts [beside the database].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--fit", "only_fitting", is_flag=True,
              help="Draw only sub-networks whose int8 footprint fits the device's SRAM/flash budget.")
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Measure these configs (JSON lines, one config per line) instead of sampling.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Measure every sub-network this many times, one round over all after the other "
                   "(predictors take the median over rounds).")
@click.option("--lab", default=None, metavar="HEAD:PORT",
              help="Measure on every device of this profile in a lab (`hwnas lab up`); the store stays --db.")
@click.option("--weights", type=click.Choice(["generated", "real"]), default="generated", show_default=True,
              help="generated: an MCU board makes the int8 weights up (latency only; uploads are kilobytes); "
                   "real: upload them and also check the output against the float model.")
@click.option("--layers", "layer_timing", is_flag=True,
              help="Also time each layer (onnxruntime's profiler here, op profiling on phones; MCU boards always "
                   "do): `hwnas show --layers` tabulates them (--force adds them to stored networks).")
@SENTINEL_OPTION
@click.option("--select", type=click.Choice(["random", "informative"]), default="random", show_default=True,
              help="informative: the sub-networks a transfer predictor learns most from, spread over what the "
                   "store's other devices predict for them (`predictor fit --transfer-from`).")
@TUNING_DB_OPTION
def profile_cmd(device, space_name, model_specs, calibration, samples, runtime, db, seed, threads, batch, force,
                artifacts, quiet, only_fitting, configs_file, rounds, lab, weights, layer_timing,
                sentinel_every, select, tuning_db) -> None:
    """Measure sub-networks of a space, or your own models, on a device and store the results
    (resumable)."""
    from hwnas_deploy.profiling import profile, profile_networks
    from hwnas_deploy.spaces import load_configs
    from hwnas_deploy.store import Store

    if bool(space_name) == bool(model_specs):
        raise click.UsageError("give --space (sub-networks) or --model (your own), one of the two")
    if model_specs and (configs_file or only_fitting):
        raise click.UsageError("--configs and --fit choose sub-networks of a --space, not models")
    if select != "random" and (configs_file or model_specs):
        raise click.UsageError("--select chooses which sub-networks of a --space to draw; --configs and --model "
                               "name them already")
    if calibration and not model_specs:
        raise click.UsageError("--calibration goes with --model")
    models = []
    if model_specs:
        from hwnas_deploy.models import load_model
        from hwnas_deploy.runtimes import runtime_info

        models = [load_model(spec, calibration) for spec in model_specs]
        for note in (n for m in models for n in m.notes(runtime_info(runtime).format)):
            click.echo(note, err=True)
    if layer_timing:
        from hwnas_deploy.devices import load_profile
        from hwnas_deploy.devices.profile import with_layer_timing

        device = with_layer_timing(load_profile(device))
    configs = load_configs(configs_file) if configs_file else None
    with Store(db) as store:
        if models:
            report = profile_networks(device, models, runtime, store, threads=threads, batch=batch, force=force,
                                    artifacts_dir=artifacts, progress=not quiet, rounds=rounds, lab=lab,
                                    weights=weights, sentinel_every_s=sentinel_every, tuning=tuning_db)
        else:
            report = profile(
                device, space_name, samples, runtime, store, seed=seed, threads=threads, batch=batch,
                force=force, artifacts_dir=artifacts, progress=not quiet, only_fitting=only_fitting,
                configs=configs, rounds=rounds, lab=lab, weights=weights, sentinel_every_s=sentinel_every,
                select=select, tuning=tuning_db,
            )
    for model in models:
        result = report.results.get(model.config_hash)
        if result is not None and result.status in ("measured", "stored"):
            click.echo(f"{model.name} ({model.config_hash}): {result.median_ms:.4g} ms")
    for config_hash, reason in report.unfit.items():
        click.echo(f"{config_hash}: does not fit: {reason}", err=True)
    tuned = {h: r.artifact.extra["tvm_tuning"] for h, r in report.results.items()
             if r.artifact is not None and r.artifact.extra.get("tvm_tuning")}
    for config_hash, used in tuned.items():
        click.echo(f"{config_hash}: {used['tuned_workloads']}/{used['workloads']} workloads tuned "
                   f"({report.results[config_hash].median_ms:.4g} ms)")
    if tuned:
        used = next(iter(tuned.values()))
        click.echo(f"TVM built with tuning database {used['database']}: stored as runtime tvm@{used['id']}")
    click.echo(report.line() + f"; store: {store.url}")
    if report.devices:
        click.echo("per device: " + ", ".join(f"{d} {n}" for d, n in report.devices.items()))
    if report.interrupted:
        click.echo("interrupted: finished measurements are stored; run the same command again to resume", err=True)
        sys.exit(130)
    if report.failed:
        sys.exit(1)


@cli.command()
@click.option("--device", required=True, help="Device profile name or YAML path.")
@click.option("--runtime", required=True)
@click.option("--space", "space_name", default=None, help="Only this space's networks [any of the toolchain's].")
@click.option("--sample", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many stored networks to measure again.")
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--batch", type=click.IntRange(min=1), default=None)
@click.option("--seed", default=0, show_default=True, help="Which stored networks are drawn.")
@click.option("--quiet", is_flag=True)
def revalidate(device, runtime, space_name, sample, db, threads, batch, seed, quiet) -> None:
    """Measure a sample of stored networks again and flag the stored figures that drifted beyond
    their confidence interval or were taken with another runtime/firmware version (exit 1 if any)."""
    from hwnas_deploy.measurement.revalidate import revalidate as run
    from hwnas_deploy.store import Store

    with Store(db) as store:
        found = run(device, runtime, store, sample, space=space_name, threads=threads, batch=batch, seed=seed,
                    progress=not quiet)
    table = [{"network": f"{r.space}/{r.config_hash}", "stored_ms": f"{r.stored_ms:.4g}", "now_ms": f"{r.now_ms:.4g}",
              "change %": f"{100 * r.change:+.1f}", "ci % (stored/now)": f"{100 * r.stored_ci:.1f}/{100 * r.now_ci:.1f}",
              "drifted": "yes" if r.drifted else "", "version": (f"{r.stored_version} -> {r.now_version}"
                                                                 if r.version_changed else r.now_version)}
             for r in found]
    if table:
        click.echo(_table(table, list(table[0])))
    drifted = sum(r.drifted for r in found)
    changed = sum(r.version_changed for r in found)
    click.echo(f"revalidated {len(found)} of {sample}: {drifted} drifted beyond their confidence interval, "
               f"{changed} measured with another version")
    if drifted or changed:
        sys.exit(1)


@cli.command()
@click.option("--model", "model_spec", default=None, metavar="FILE",
              help="Your model: .onnx | .tflite | .pt2 | module.py:function | zoo:NAME.")
@click.option("--space", "space_name", default=None, help="Or a sub-network: its space ...")
@click.option("--config", "config_text", default=None, help="... and its config (JSON or @file.json).")
@click.option("--device", required=True, help="Device profile name or YAML path: whose budget to check.")
@click.option("--runtime", default=None, help="Runtime to analyse for [the profile's first].")
@click.option("--calibration", default=None, type=click.Path(exists=True),
              help="With --model: .npy file or folder of real inputs for int8 quantisation [random].")
@click.option("--json", "as_json", is_flag=True)
def analyze(model_spec, space_name, config_text, device, runtime, calibration, as_json) -> None:
    """Without a board: MACs, parameters, peak SRAM (the firmware's arena plan), flash, per layer,
    and whether the network fits the device and why not."""
    from dataclasses import asdict

    from hwnas_deploy.analysis import analyze as run_analysis

    if bool(model_spec) == bool(space_name and config_text):
        raise click.UsageError("give --model FILE, or --space and --config")
    if model_spec:
        from hwnas_deploy.models import load_model

        network = load_model(model_spec, calibration)
    else:
        from hwnas_deploy.measurement import SubNetwork
        from hwnas_deploy.spaces import load_config

        network = SubNetwork(space_name, load_config(config_text))
    result = run_analysis(network, device, runtime)
    if as_json:
        click.echo(json.dumps({**asdict(result), "fits": result.fits}, indent=2))
        return
    if result.layers:
        click.echo(_table(result.layers, list(result.layers[0])))
    click.echo(result.summary())


@cli.command()
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
@click.option("--device", default=None)
@click.option("--space", "space_name", default=None)
@click.option("--runtime", default=None)
@click.option("--rows", is_flag=True, help="One row per measurement instead of a summary per group.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG of latency vs MACs (with Kendall tau per series).")
@click.option("--models", "list_models", is_flag=True, help="Your own models measured, per device and runtime.")
@click.option("--model", "model_name", default=None, metavar="NAME|HASH", help="One of your models' measurements.")
@click.option("--layers", "layers_of", default=None, metavar="NAME|HASH",
              help="Per-layer table of a network's measurement (MCU boards; CPUs and phones measured with profile "
                   "--layers); with --plot a figure, --html a page.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="With --layers: an HTML page.")
@click.option("--provenance", is_flag=True,
              help="One row per measurement with where and how it was taken: runtime or firmware version, CPU, "
                   "lab device, host load before-after, governor, clock, CPUs, drift sentinel's reading, weights.")
def show(db, device, space_name, runtime, rows, as_json, plot, list_models, model_name, layers_of, html_path,
         provenance) -> None:
    """Show what the store holds."""
    from hwnas_deploy.store import Store

    with Store(db) as store:
        if layers_of:
            from hwnas_deploy.report.layers import find_measurement, layer_rows, layers_html, plot_layers

            m = find_measurement(store, layers_of, device, runtime)
            data = layer_rows(m)
            title = (f"{m['config'].get('name', m['space'])} {m['config_hash'][:8]} on {m['device']} "
                     f"({m['runtime']}): {m['median_ms']:.4g} ms")
            if plot:
                click.echo(f"wrote {plot_layers(data, title, plot)}", err=True)
            if html_path:
                click.echo(f"wrote {layers_html(data, title, html_path)}", err=True)
            click.echo(json.dumps(finite(data), indent=2) if as_json else title + "\n" + _table(data, list(data[0])))
            return
        if list_models or model_name:
            from hwnas_deploy.models.model import stored_models

            data = stored_models(store, model_name, device, runtime)
            if as_json:
                click.echo(json.dumps(finite(data), indent=2, default=str))
            elif not data:
                click.echo(f"{store.url}: no measurements of your own models")
            else:
                click.echo(_table(data, ["model", "hash", "kind", "device", "runtime", "threads", "batch",
                                         "median_ms", "macs", "params"]))
            return
        if plot:
            from hwnas_deploy.report import latency_vs_macs

            data = store.measurements(device=device, space=space_name, runtime=runtime)
            if data:
                click.echo(f"wrote {latency_vs_macs(data, plot)}", err=True)
        if provenance:
            from hwnas_deploy.measurement.provenance import provenance_row

            data = [provenance_row(r) for r in store.measurements(device=device, space=space_name, runtime=runtime)]
            cols = list(data[0]) if data else []
        elif rows or device or space_name or runtime:
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
            click.echo(json.dumps(finite(data), indent=2, default=str))
        elif not data:
            click.echo(f"{store.url}: no measurements")
        else:
            click.echo(_table(data, cols))


@cli.group(name="store")
def store_group() -> None:
    """Bring measurements into the store."""


@store_group.command("import")
@click.option("--csv", "csv_paths", required=True, multiple=True, type=click.Path(exists=True),
              help="CSV file(s) or folder(s) of another tool's or lab's measurements (repeatable).")
@click.option("--device", required=True, help="A name for the device they were measured on.")
@click.option("--space", "space_name", required=True, help="The search space of the configs.")
@click.option("--config-column", default=None, help="The config column [config_json, config or Sub-network].")
@click.option("--target", required=True, help="The latency column.")
@click.option("--unit", default="ms", show_default=True, type=click.Choice(["ms", "us", "s"]))
@click.option("--runtime", default="imported", show_default=True, help="What to call the runtime they used.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
def store_import(csv_paths, device, space_name, config_column, target, unit, runtime, threads, batch, db) -> None:
    """Record another tool's latencies as measurements of a named device (provenance: imported,
    from which file), for predictors of a device only someone else measured."""
    from hwnas_deploy.predictors.imported import import_csv
    from hwnas_deploy.store import Store

    with Store(db) as store:
        report = import_csv(store, list(csv_paths), device, space_name, target, config_column=config_column,
                            unit=unit, runtime=runtime, threads=threads, batch=batch)
        click.echo(f"{report.line()}; store: {store.url}")


@cli.group()
def firmware() -> None:
    """Build and flash the Cortex-M profiling firmware."""


BAUD_OPTION = click.option("--baud", type=click.IntRange(1200, 12_000_000), default=921600, show_default=True,
                           help="The board's serial line (its profile's connection.baudrate must say the same).")


@firmware.command("build")
@click.option("--board", default="qemu-mps2-an500", show_default=True, help="A folder of firmware/boards/.")
@BAUD_OPTION
def firmware_build(board: str, baud: int) -> None:
    """Compile the firmware for a board with arm-none-eabi-gcc (an over-budget build fails to link)."""
    from hwnas_deploy.mcu.firmware import build_firmware

    click.echo(str(build_firmware(board, baud=baud)))


@firmware.command("flash")
@click.option("--board", required=True, help="stm32f746-disco | nucleo-h743zi (ST-LINK attached)")
@BAUD_OPTION
def firmware_flash(board: str, baud: int) -> None:
    """Build and write the firmware to a board over ST-LINK (st-flash or pyocd)."""
    from hwnas_deploy.mcu.firmware import flash_firmware

    click.echo(flash_firmware(board, baud))


@cli.group()
def cache() -> None:
    """The conversion cache: LiteRT conversions and TVM builds kept across runs ($HWNAS_CACHE_DIR)."""


@cache.command("show")
def cache_show() -> None:
    """Where the cache is, how many conversions it holds and how large it is; where firmware
    builds and the converter environment (`hwnas setup converter`) are."""
    from hwnas_deploy.export.cache import ConversionCache
    from hwnas_deploy.export.litert_env import user_env_dir
    from hwnas_deploy.mcu.firmware import build_root

    c = ConversionCache()
    if not c.enabled:
        click.echo("conversion cache: off ($HWNAS_CACHE_DIR=off)")
    else:
        entries = c.entries()
        click.echo(f"conversion cache: {c.root}: {len(entries)} conversions, "
                   f"{sum(e.bytes for e in entries) / 2**20:.1f} MB of {c.max_size / 2**20:.0f} MB")
    click.echo(f"firmware builds: {build_root()}")
    if user_env_dir().is_dir():
        click.echo(f"converter environment: {user_env_dir()} (`hwnas setup converter`)")


@cache.command("clear")
def cache_clear() -> None:
    """Remove every cached conversion."""
    from hwnas_deploy.export.cache import ConversionCache

    c = ConversionCache()
    click.echo(f"removed {c.clear()} conversions from {c.root}" if c.enabled else "conversion cache: off")


@cli.group()
def lab() -> None:
    """A hardware lab on Ray: devices on several hosts, one store (extra [lab])."""


@lab.command("up")
@click.option("--device", "devices", multiple=True, required=True,
              help="PROFILE (a twin, or the local CPU), PROFILE*N (N of them), PROFILE@WHERE (a serial port, "
                   "adb serial or tracker this host has attached). Repeat for each.")
@click.option("--address", default=None, help="HEAD:PORT of the lab to join as a worker [start the head here].")
@click.option("--port", default=6380, show_default=True, help="The head's port.")
@click.option("--node-ip", default="127.0.0.1", show_default=True, help="The address this host is reached at.")
@click.option("--host", default=None, help="Name of this host in device ids [its hostname].")
@click.option("--cpus", type=int, default=None, help="CPUs this host lends to exports [all].")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --node-ip / --address (firewall it).")
def lab_up(devices, address, port, node_ip, host, cpus, allow_remote) -> None:
    """Start this host's part of a lab and open its devices; lists them, and what else is plugged in."""
    from hwnas_deploy.lab import up
    from hwnas_deploy.lab.discover import attached

    info = up(list(devices), address=address, host=host, port=port, node_ip=node_ip, allow_remote=allow_remote,
              num_cpus=cpus)
    click.echo(f"lab {info.address}: host {info.host} serves {len(info.devices)} devices")
    for facts in info.devices:
        detail = ", ".join(f"{k}={v}" for k, v in facts.items() if k != "device" and isinstance(v, str | int) and v)
        click.echo(f"  {facts['device']}  {detail[:100]}")
    for line in attached():
        click.echo(f"  also plugged in (not served): {line}")
    click.echo(f"use it: hwnas profile --lab {info.address} ... ; stop it: hwnas lab down --address {info.address}")


@lab.command("status")
@click.option("--address", required=True, help="HEAD:PORT of the lab.")
@click.option("--json", "as_json", is_flag=True)
def lab_status(address, as_json) -> None:
    """Devices (free / busy / down), each client's queue, the failures."""
    from hwnas_deploy.lab import status

    st = status(address)
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
        return
    hosts = ", ".join(f"{h['address']}{'' if h['alive'] else ' (dead)'}" for h in st["hosts"])
    click.echo(f"lab {address}: {len(st['devices'])} devices on {len(st['hosts'])} Ray nodes ({hosts})")
    for d in st["devices"]:
        line = f"  {d['device']:<32} {d['state']:<12} done {d['done']}  failed {d['failed']}"
        line += f"  job {d['job']}" if d["job"] else ""
        line += f"  last error: {str(d['last_error']).splitlines()[0][:80]}" if d["last_error"] else ""
        click.echo(line)
    for client, q in st["queue"].items():
        click.echo(f"  client {client}: queued {q['queued']}, running {q['running']}, done {q['done']}, "
                   f"failed {q['failed']} on {q['devices']} devices")


@lab.command("down")
@click.option("--address", required=True, help="HEAD:PORT of the lab.")
@click.option("--host", default=None, help="Close only this host's devices [all of the lab's].")
def lab_down(address, host) -> None:
    """Close the devices (stopping their twins) and stop Ray on this host."""
    from hwnas_deploy.lab import down

    closed = down(address, host)
    click.echo(f"closed {len(closed)} devices; Ray stopped on this host")


@cli.group()
def sim() -> None:
    """Simulated twins of real devices (QEMU Cortex-M7 board, Android phone over adb, TVM RPC server)."""


@sim.command("start")
@click.argument("device")
@click.option("--port", type=int, default=None,
              help="TCP port: the board's serial line [a free one], the adb twin's [the profile's port].")
def sim_start(device: str, port: int | None) -> None:
    """Start a device's twin in the background and print how to reach it: the serial URL of a
    board, the adb serial of the Android twin (`adb connect SERIAL`)."""
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
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--csv", "csv_paths", multiple=True, type=click.Path(exists=True),
                     help="CSV file(s) or folder(s) with a config column instead of the store (repeatable)."),
        click.option("--target", default=None, help="With --csv: the column to predict."),
        click.option("--correct-drift", is_flag=True,
                     help="With --db: scale each latency by the sentinel's typical reading over the one measured "
                          "beside it (`hwnas profile --sentinel-every`)."),
        click.option("--transfer-from", default=None, metavar="all|DEVICE/RUNTIME,...",
                     help="With --db: the transfer estimator, built on these other settings of the space in the "
                          "store (all: every one with 20+ networks), for a device with few rows."),
        click.option("--runtime-version", default=None, metavar="VERSION",
                     help="With --db: only rows measured with this runtime or firmware version, e.g. "
                          "'onnxruntime 1.32.0' (rows of two versions are never mixed)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _sources(db, space_name, device, runtime, threads, batch, transfer_from, correct_drift):
    """Other devices' rows for the transfer estimator (None without --transfer-from)."""
    if not transfer_from:
        return None
    if not db and not (device and runtime):
        raise click.UsageError("--transfer-from goes with --db, --device and --runtime")
    from hwnas_deploy.predictors.transfer import sources_from_store
    from hwnas_deploy.store import Store

    with Store(db) as store:
        return sources_from_store(store, space_name, (device, runtime, threads, batch), transfer_from,
                                  correct_drift=correct_drift)


def _dataset(space_name, db, device, runtime, threads, batch, csv_paths, target, correct_drift=False,
             runtime_version=None):
    from hwnas_deploy.predictors import from_csv, from_store
    from hwnas_deploy.store import Store

    if csv_paths:
        if not target:
            raise click.UsageError("--csv needs --target (the column to predict)")
        if correct_drift or runtime_version:
            raise click.UsageError("--correct-drift and --runtime-version go with --db (the store holds the "
                                   "sentinel's readings and the versions)")
        return from_csv(list(csv_paths), space_name, target)
    if not (device and runtime):
        raise click.UsageError("give --device and --runtime (rows from the store), or --csv and --target")
    with Store(db) as store:
        return from_store(store, device, space_name, runtime, threads, batch, correct_drift=correct_drift,
                          version=runtime_version)


@predictor.command("fit")
@_data_options
@click.option("--estimator", default="ridge", show_default=True,
              help="ridge | svr | gbt | rf | kernels | hybrid | costs | macs (kernels, hybrid: with --lut)")
@click.option("--params", "params_text", default=None, help="Hyper-parameters as JSON, e.g. '{\"alpha\": 0.5}'.")
@click.option("--lut", "lut_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The device's LUT (`hwnas lut build`), for the kernels and hybrid estimators.")
@click.option("--train-size", type=click.IntRange(min=1), default=None, help="Fit on this many random rows [all].")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Predictor file (JSON).")
def predictor_fit(space_name, db, device, runtime, threads, batch, csv_paths, target, correct_drift, transfer_from,
                  runtime_version, estimator, params_text, lut_path, train_size, seed, out_path) -> None:
    """Fit a predictor and save it as JSON (data, not a pickle)."""
    import numpy as np

    from hwnas_deploy.errors import PredictorError
    from hwnas_deploy.predictors import Predictor
    from hwnas_deploy.predictors.lut import LatencyLUT

    data = _dataset(space_name, db, device, runtime, threads, batch, csv_paths, target, correct_drift,
                    runtime_version)
    try:
        params = json.loads(params_text) if params_text else None
    except json.JSONDecodeError as exc:
        raise PredictorError(f"--params is not JSON: {exc}") from None
    if train_size:
        if not 2 <= train_size <= len(data):
            raise PredictorError(f"--train-size {train_size}: the data has {len(data)} rows")
        data = data.subset(np.random.default_rng(seed).permutation(len(data))[:train_size])
    lut = LatencyLUT.load(lut_path) if lut_path else None
    sources = _sources(db, space_name, device, runtime, threads, batch, transfer_from, correct_drift)
    if sources is not None:
        if estimator not in ("ridge", "transfer"):
            raise click.UsageError(f"--transfer-from fits the transfer estimator, not {estimator}")
        estimator = "transfer"
    pred = Predictor(estimator, params, lut=lut, sources=sources).fit(data.configs, data.y, data.space, data.target,
                                                                      data.source)
    path = pred.save(out_path)
    click.echo(f"{estimator} predictor of {data.target} on {data.space}, fitted on {len(data)} rows"
               + (f" and {len(sources)} source setting(s) ({', '.join(sources)})" if sources else "") + f": {path}")


@predictor.command("eval")
@_data_options
@click.option("--estimators", default="ridge,svr,gp,gbt,rf,costs,macs", show_default=True,
              help="Comma-separated; add kernels,hybrid with --lut.")
@click.option("--lut", "lut_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The device's LUT (`hwnas lut build`), for the kernels and hybrid estimators.")
@click.option("--train-size", type=click.IntRange(min=1), required=True, help="Training rows per estimator.")
@click.option("--test-size", type=click.IntRange(min=1), default=None, help="Held-out rows [all the others].")
@click.option("--curve", default=None, help="Learning curve over these training sizes, e.g. 50,100,200,500.")
@click.option("--trials", type=click.IntRange(min=1), default=5, show_default=True,
              help="Random splits per learning-curve point.")
@click.option("--seed", default=0, show_default=True)
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write report.json, scatter.png (and learning_curve.png) here.")
def predictor_eval(space_name, db, device, runtime, threads, batch, csv_paths, target, correct_drift, transfer_from,
                   runtime_version, estimators, lut_path, train_size, test_size, curve, trials, seed,
                   report_dir) -> None:
    """Held-out accuracy of each estimator on the same split (and learning curves)."""
    from hwnas_deploy.predictors.evaluation import holdout, learning_curve, markdown_table, write_report
    from hwnas_deploy.predictors.lut import LatencyLUT

    data = _dataset(space_name, db, device, runtime, threads, batch, csv_paths, target, correct_drift,
                    runtime_version)
    names = [e.strip() for e in estimators.split(",") if e.strip()]
    lut = LatencyLUT.load(lut_path) if lut_path else None
    sources = _sources(db, space_name, device, runtime, threads, batch, transfer_from, correct_drift)
    if sources is not None:
        names = ["transfer", *(n for n in names if n != "transfer")]
        click.echo(f"transfer from {len(sources)} setting(s): " + ", ".join(f"{k} ({len(v['y'])} networks)"
                                                                          for k, v in sources.items()))
    evals = holdout(data, names, train_size, test_size, seed, lut=lut, sources=sources)
    click.echo(f"{data.target} of {data.space} ({data.source}): {len(data)} distinct sub-networks")
    click.echo(markdown_table(evals))
    curves = None
    if curve:
        sizes = [int(v) for v in curve.split(",")]
        curves = learning_curve(data, names, sizes, trials, test_size, seed, lut=lut, sources=sources)
        click.echo("\nlearning curve (mean +- std over %d splits): MAPE %% / Kendall tau" % trials)
        for e, by_size in curves.items():
            cells = [f"{s}: {v['mape'][0]:.2f}+-{v['mape'][1]:.2f} / {v['tau'][0]:.3f}+-{v['tau'][1]:.3f}"
                     for s, v in sorted(by_size.items())]
            click.echo(f"  {e}: " + ", ".join(cells))
    if report_dir:
        click.echo(f"report: {write_report(report_dir, data, evals, seed, curves)}")


@predictor.command("predict")
@click.option("--predictor", "path", required=True, type=click.Path(dir_okay=False), help="A file from `fit`.")
@click.option("--config", "config_text", default=None, help="One config as JSON, or @file.json.")
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON lines, one config per line.")
def predictor_predict(path, config_text, configs_file) -> None:
    """Predict the target of configs with a saved predictor."""
    from hwnas_deploy.predictors import Predictor
    from hwnas_deploy.spaces import get_space, load_config, load_configs

    pred = Predictor.load(path)
    if not (config_text or configs_file):
        raise click.UsageError("give --config or --configs")
    configs = [load_config(config_text)] if config_text else []
    if configs_file:
        configs += load_configs(configs_file)
    sp = get_space(pred.space)
    for cfg, y in zip(configs, pred.predict(configs), strict=True):
        click.echo(f"{sp.config_hash(cfg)}  {pred.target} {y:.6g}")


@cli.command(name="train-supernet")
@click.option("--space", "space_name", default="mcu-mbnet", show_default=True)
@click.option("--dataset", default="digits", show_default=True,
              help="'digits' (scikit-learn's, the default), an .npz (x_train, y_train, x_val, y_val) "
                   "or an image folder.")
@click.option("--strategy", default="sandwich", show_default=True, type=click.Choice(["sandwich", "pareto-rank"]))
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), default=None,
              help="pareto-rank: reference networks, JSON lines {config, accuracy, cost}.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", default=0.05, show_default=True)
@click.option("--n-random", type=click.IntRange(min=0), default=2, show_default=True,
              help="Random sub-networks per step besides the largest/smallest.")
@click.option("--max-resolution", type=click.IntRange(min=1), default=96, show_default=True,
              help="Train at the space's resolutions up to this.")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="At most this many training images per epoch.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present, else CPU), cpu or cuda.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint; an existing one with the same settings is resumed.")
@click.option("--quiet", is_flag=True)
def train_supernet_cmd(space_name, dataset, strategy, reference, epochs, batch_size, lr, n_random, max_resolution,
                       train_limit, seed, device, out_path, quiet) -> None:
    """Train a weight-sharing supernet of a space (resumable, deterministic for a seed)."""
    from hwnas_deploy.supernet.train import TrainSettings, train_supernet

    settings = TrainSettings(space=space_name, dataset=dataset, strategy=strategy, epochs=epochs,
                             batch_size=batch_size, lr=lr, n_random=n_random, max_resolution=max_resolution,
                             train_limit=train_limit, seed=seed, reference=reference)
    result = train_supernet(settings, out_path, device=device, progress=not quiet)
    last = result.history[-1] if result.history else {}
    click.echo(f"{out_path}: {result.epochs_done} epochs (resumed after {result.resumed_from}); validation accuracy "
               f"largest {last.get('val_acc_largest', float('nan')):.3f}, "
               f"smallest {last.get('val_acc_smallest', float('nan')):.3f}")


@cli.command(name="accuracy")
@click.option("--supernet", "checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_text", default=None, help="JSON config or @file.")
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON-lines file of configs.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--db", default=None, help="Store that caches the estimates (default: none).")
def accuracy_cmd(checkpoint, config_text, configs_file, split, db) -> None:
    """Top-1 accuracy (%) of sub-networks estimated by a trained supernet, one JSON line each."""
    import json

    from hwnas_deploy.spaces import load_config, load_configs
    from hwnas_deploy.store import Store
    from hwnas_deploy.supernet.objective import SupernetAccuracy

    if (config_text is None) == (configs_file is None):
        raise click.UsageError("give --config or --configs")
    configs = [load_config(config_text)] if config_text else load_configs(configs_file)
    store = Store(db) if db else None
    try:
        values = SupernetAccuracy(checkpoint, store, split)(configs)
    finally:
        if store is not None:
            store.close()
    for cfg, value in zip(configs, values, strict=True):
        click.echo(json.dumps({"config": cfg, f"{split}_accuracy": round(float(value), 3)}))


@cli.group()
def lut() -> None:
    """Latency look-up tables: blocks measured alone, summed per sub-network."""


@lut.command("build")
@click.option("--device", required=True)
@click.option("--space", "space_name", required=True)
@click.option("--runtime", required=True)
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Cover the blocks of this many random sub-networks.")
@click.option("--seed", default=0, show_default=True)
@click.option("--configs", "configs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Cover the blocks of these configs (JSON lines) instead.")
@click.option("--every-block", "every_block", default=None, metavar="GENE=VALUE,...",
              help="Cover every distinct block of the space with these scalar genes fixed, e.g. r=128,w=0.5 "
                   "(MobileNet-style spaces) instead.")
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--batch", type=click.IntRange(min=1), default=None)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="LUT file (JSON); an existing one is extended (resumable).")
@click.option("--db", default=None, help="Also record every block measurement in this store (and reuse what it holds).")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Measure every block this many times, round after round; the LUT keeps the median.")
@click.option("--weights", type=click.Choice(["generated", "real"]), default="generated", show_default=True,
              help="generated: an MCU board makes the int8 weights up (latency only; uploads are kilobytes); "
                   "real: upload them and also check the output against the float model.")
@click.option("--quiet", is_flag=True)
@SENTINEL_OPTION
@click.option("--correct-drift", is_flag=True,
              help="Scale each block measured now by the sentinel's median reading over the one beside it.")
def lut_build(device, space_name, runtime, samples, seed, configs_file, every_block, threads, batch, out_path, db,
              rounds, weights, quiet, sentinel_every, correct_drift) -> None:
    """Measure every distinct block of the sub-networks on the device."""
    from hwnas_deploy.predictors.lut import build_lut
    from hwnas_deploy.spaces import get_space, load_configs
    from hwnas_deploy.store import Store

    if configs_file and every_block:
        raise click.UsageError("give --configs or --every-block, not both")
    sp = get_space(space_name)
    if every_block:
        if not hasattr(sp, "covering_configs"):
            raise ConfigError(f"--every-block: space {space_name!r} cannot list its blocks; give --configs "
                              "or --samples")
        configs = sp.covering_configs(_gene_values(every_block, "--every-block"))
    else:
        configs = load_configs(configs_file) if configs_file else sp.sample_unique(samples, seed)
    store = Store(db) if db else None
    try:
        table = build_lut(device, space_name, runtime, configs, out_path, threads=threads, batch=batch,
                          store=store, rounds=rounds, weights=weights, progress=not quiet,
                          sentinel_every_s=sentinel_every, correct_drift=correct_drift)
    finally:
        if store is not None:
            store.close()
    click.echo(f"{len(table.entries)} blocks of {table.space} on {table.device}/{table.runtime}: {out_path}")


def _gene_values(text: str, option: str) -> dict:
    """"r=128,w=0.5" -> {"r": 128, "w": 0.5}; a one-line error naming the option otherwise."""
    values = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not (sep and name.strip()):
                raise ValueError
            values[name.strip()] = json.loads(value)
        except ValueError:
            raise click.BadParameter(f"{part!r}: expected GENE=VALUE pairs separated by commas, e.g. r=128,w=0.5",
                                     param_hint=option) from None
    return values


@lut.command("compare")
@click.option("--lut", "lut_path", required=True, type=click.Path(dir_okay=False))
@click.option("--db", default=None, help="Store with whole-network measurements on the LUT's device and runtime.")
@click.option("--calibrate", "n_calibrate", type=click.IntRange(min=1), default=10, show_default=True,
              help="Fit the whole-network term on this many measured networks; compare on the others.")
@click.option("--slope", is_flag=True, help="Fit a + b * sum (least squares) instead of the offset a alone.")
@click.option("--seed", default=0, show_default=True)
@click.option("--save", is_flag=True, help="Keep the fitted calibration in the LUT file.")
@click.option("--correct-drift", is_flag=True, help="Correct the measured networks for drift (see predictor eval).")
def lut_compare(lut_path, db, n_calibrate, slope, seed, save, correct_drift) -> None:
    """How far block sums (raw and calibrated) sit from whole-network measurements."""
    from hwnas_deploy.predictors.lut import LatencyLUT, calibrate_and_compare
    from hwnas_deploy.store import Store

    table = LatencyLUT.load(lut_path)
    with Store(db) as store:
        report = calibrate_and_compare(table, store, n_calibrate, slope=slope, seed=seed, correct_drift=correct_drift)
    a, b = table.calibration
    click.echo(f"{table.space} on {table.device}/{table.runtime}: {len(table.entries)} blocks; calibrated on "
               f"{report['calibrated_on']} networks: whole = {a:.4g} ms + {b:.4f} x block sum; compared on "
               f"{report['compared_on']} others")
    click.echo(f"block sums are {report['mean_sum_over_measured']['ratio']:.3f}x the measured latency on average")
    click.echo("| prediction | MAPE % | Kendall tau | within 5 % | within 10 % |\n|---|---:|---:|---:|---:|")
    for name in ("block_sum", "calibrated"):
        m = report[name]
        click.echo(f"| {name} | {m['mape']:.2f} | {m['tau']:.3f} | {m['within5']:.1f} | {m['within10']:.1f} |")
    if save:
        table.save(lut_path)



@cli.command(name="differentiable")
@click.option("--lut", "lut_path", required=True, type=click.Path(dir_okay=False),
              help="The device's latency LUT; with --device it is built (or completed) there first.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder (supernet.pt, front.json, family.png); an existing run is resumed.")
@click.option("--device", default=None, help="Measure the family here (and complete the LUT); needs --runtime, --db.")
@click.option("--runtime", default=None)
@click.option("--db", default=None, help="Store for the family's measurements and accuracy estimates.")
@click.option("--space", "space_name", default="mcu-mbnet", show_default=True)
@click.option("--dataset", default="digits", show_default=True, help="digits, an .npz or an image folder.")
@click.option("--resolution", default=64, show_default=True)
@click.option("--width", default=0.35, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup-epochs", default=4, show_default=True, help="Weights alone before architecture updates.")
@click.option("--kappa", default=10.0, show_default=True, help="Weight of the latency budget's excess.")
@click.option("--lam", default=10.0, show_default=True, help="Weight of the complexity budget's excess.")
@click.option("--complexity", default="params", show_default=True, type=click.Choice(["params", "macs"]))
@click.option("--budgets", type=click.IntRange(min=1), default=7, show_default=True,
              help="Budget points (architectures) to take out.")
@click.option("--axis", default="latency", show_default=True, type=click.Choice(["latency", "complexity"]))
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="At most this many training images per epoch.")
@click.option("--seed", default=0, show_default=True)
@click.option("--quiet", is_flag=True)
def differentiable_cmd(lut_path, out_dir, device, runtime, db, space_name, dataset, resolution, width, epochs,
                       warmup_epochs, kappa, lam, complexity, budgets, axis, train_limit, seed, quiet) -> None:
    """Differentiable latency-aware search: one run, one architecture per budget (Gumbel-softmax,
    LUT latency, a budget hypernetwork)."""
    from hwnas_deploy.search.differentiable import DifferentiableSettings, run_differentiable
    from hwnas_deploy.store import Store

    settings = DifferentiableSettings(space=space_name, dataset=dataset, resolution=resolution, width=width,
                                      epochs=epochs, warmup_epochs=warmup_epochs, kappa=kappa, lam=lam,
                                      complexity=complexity, train_limit=train_limit, seed=seed)
    if device is not None and (runtime is None or db is None):
        raise click.UsageError("--device needs --runtime and --db")
    store = Store(db) if db else None
    try:
        rows = run_differentiable(settings, lut_path, out_dir, budgets=budgets, axis=axis, device=device,
                                  runtime=runtime, store=store, progress=not quiet)
    finally:
        if store is not None:
            store.close()
    click.echo(f"{'budget':>7} {'LUT ms':>8} {'measured ms':>11} {'test acc %':>10} {'params':>8}  depths")
    for r in rows:
        measured = f"{r['measured_ms']:.3f}" if "measured_ms" in r else "-"
        click.echo(f"{r['budget'][axis]:7.3f} {r['lut_ms']:8.3f} {measured:>11} {r['accuracy']:10.2f} "
                   f"{r['params']:8d}  {r['config']['d']}")
    click.echo(f"run folder: {out_dir} (hwnas front / export / deploy --run {out_dir})")


@cli.command(name="search")
@click.argument("recipe", required=False)
@click.option("--space", default=None, help="Search space (overrides the recipe's).")
@click.option("--objective", "objectives", multiple=True,
              help="macs | params | sram | flash | NAME=predictor:FILE | NAME=lut:FILE | NAME=table:CSV | "
                   "NAME=measure[:DEVICE/RUNTIME]; max: before one maximises it (repeatable; NAME acc* is maximised).")
@click.option("--constraint", "constraints", multiple=True, help="NAME<=LIMIT, e.g. latency<=50 (repeatable).")
@click.option("--device", default=None, help="What plain NAME=measure objectives measure on (overrides the recipe's).")
@click.option("--runtime", default=None, help="The device's runtime for NAME=measure objectives.")
@click.option("--tactic", default=None, help="plain | validated | warm-start | full | concurrent [plain]")
@click.option("--algorithm", default=None, help="nsga2 | agemoea | unsga3 | random [nsga2]")
@click.option("--pop", "population", type=click.IntRange(min=2), default=None, help="Population size [50].")
@click.option("--generations", type=click.IntRange(min=1), default=None,
              help="Generations (full/concurrent: of the predictor search) [20].")
@click.option("--seed", type=int, default=None)
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="full / concurrent: validations (real measurements) in all [100].")
@click.option("--estimator", default=None, help="full / concurrent: the predictor of measured objectives [gbt].")
@click.option("--warm-start", "warm_start", default=None,
              help="First population from an earlier run's front.json (or JSON lines of configs).")
@click.option("--popdb", multiple=True, help="Reduce the space to the choices earlier runs' networks used (their "
                                             "checkpoint.json; repeatable).")
@click.option("--popdb-threshold", type=float, default=None)
@click.option("--prune", default=None, help="SHARE:OBJECTIVE, e.g. 0.25:latency=lut:lut.json: drop each gene's least "
                                            "efficient share of choices (parameters per latency).")
@click.option("--reference", default=None, help="A reference front.json: the history adds the generational distance.")
@click.option("--export", "export_formats", default=None,
              help="Export the picked networks when done, e.g. blob,c (overrides the recipe's export formats).")
@click.option("--pick", default=None, help="Which networks --export exports: knee | all | INDEX | HASH [knee].")
@click.option("--db", default=None, help="Store for measure: objectives [$HWNAS_DB or hwnas.sqlite].")
@click.option("--lab", default=None, metavar="HEAD:PORT",
              help="Take measure: objectives' measurements on every device of the profile in this lab.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder (required): front.json, front.png, report.html, checkpoint.json (a killed search "
                   "resumes).")
@click.option("--list", "list_recipes", is_flag=True, help="List the recipes found and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def search_cmd(recipe, out_dir, list_recipes, quiet, export_formats, pick, db, **options) -> None:
    """Search for the Pareto front of a RECIPE (a name from search/ or a YAML path; options override
    its fields, or make one without it). Resumable: run it again with the same --out."""
    from hwnas_deploy.search.recipe import Recipe, available_recipes, prepare
    from hwnas_deploy.search.run_folder import run_recipe
    from hwnas_deploy.store import Store

    if list_recipes:
        found = available_recipes()
        width = max(map(len, found), default=0)
        click.echo("\n".join(f"{name:<{width}}  {origin:<16}  {path}" for name, (path, origin) in found.items()))
        return
    if not out_dir:
        raise click.UsageError("give --out RUN_FOLDER")
    if recipe is None:
        if not options["space"] or not options["objectives"]:
            raise click.UsageError("give a RECIPE, or --space and at least one --objective")
        base = Recipe(space=options["space"], objectives=list(options["objectives"]))
    else:
        base = Recipe.load(recipe)
    export = dict(base.export or {})
    if export_formats:
        export["formats"] = [f.strip() for f in export_formats.split(",") if f.strip()]
    if pick:
        export["pick"] = pick
    r = base.overridden(**options, db=db, export=export or None)
    store = Store(r.db) if r.measures else None
    if store is not None:
        click.get_current_context().call_on_close(store.close)
    prepared = prepare(r, store)
    if prepared.allowed is not None:
        full = [int(u) + 1 for u in prepared.space.gene_bounds()[1]]
        click.echo(f"reduced space: {sum(map(len, prepared.allowed))} of {sum(full)} gene choices kept", err=True)
    result = run_recipe(prepared, out_dir, progress=not quiet)
    if not result.front:
        click.echo(f"none of the {result.evaluations} networks evaluated meets {', '.join(r.constraints)}", err=True)
        sys.exit(1)
    from pathlib import Path

    click.echo(f"{result.evaluations} networks {'validated' if r.tactic in ('full', 'concurrent') else 'evaluated'}"
               f"; front of {len(result.front)}; hypervolume {result.history[-1]['hypervolume']:.4f}: "
               f"{Path(out_dir) / 'front.json'}")
    _echo_front(out_dir, limit=10)
    if r.export:
        click.echo(f"artifacts: {Path(out_dir) / 'artifacts'}")


def _echo_front(run: str, limit: int | None = None) -> None:
    from hwnas_deploy.search.run_folder import knee, load_front
    from hwnas_deploy.spaces import get_space

    front = load_front(run)
    sp = get_space(front.space)
    k = knee(front) if front.front else None
    rows = [{"#": i, **{n: row[n] for n in front.names}, "config_hash": sp.config_hash(row["config"]),
             "": "knee" if i == k else ""} for i, row in enumerate(front.front)]
    shown = rows if limit is None or len(rows) <= limit else rows[:limit]
    click.echo(_table(shown, ["#", *front.names, "config_hash", ""]))
    if len(shown) < len(rows):
        click.echo(f"... {len(rows) - len(shown)} more: hwnas front --run {run}")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="A run folder of `hwnas search`.")
@click.option("--json", "as_json", is_flag=True, help="The front as JSON (values and configs).")
def front(run_dir: str, as_json: bool) -> None:
    """Show a search's Pareto front: index, objectives, config hash, the knee marked."""
    from hwnas_deploy.search.run_folder import load_front

    if as_json:
        f = load_front(run_dir)
        click.echo(json.dumps({"space": f.space, "objectives": f.objectives, "front": f.front}, indent=1))
        return
    _echo_front(run_dir)


@cli.command()
@click.option("--run", "run_dir", default=None, type=click.Path(), help="A run folder of `hwnas search` ...")
@click.option("--pick", default="knee", show_default=True, help="... and which: knee | all | INDEX | CONFIG-HASH prefix")
@click.option("--model", "model_specs", multiple=True, metavar="FILE",
              help="Or your own model: .onnx | .tflite | .pt2 | module.py:function | zoo:NAME (repeatable).")
@click.option("--calibration", default=None, type=click.Path(exists=True),
              help="With --model: .npy file or folder of real inputs for int8 quantisation [random].")
@click.option("--device", required=True)
@click.option("--runtime", default=None, help="The device's runtime [its first].")
@click.option("--db", default=None, help="Store: a SQLite path or database URL [$HWNAS_DB or hwnas.sqlite].")
@click.option("--artifacts", default=None, help="Folder for the exported artifacts [RUN/artifacts].")
@click.option("--force", is_flag=True, help="Measure again what the store already has.")
@click.option("--quiet", is_flag=True)
def deploy(run_dir, pick, model_specs, calibration, device, runtime, db, artifacts, force, quiet) -> None:
    """Export picked networks of a front (--run) or your own models (--model), deploy them on the
    device with their real weights, check and measure them."""
    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.store import Store

    if bool(run_dir) == bool(model_specs):
        raise click.UsageError("give --run (a search's front) or --model (your own), one of the two")
    runtime = runtime or load_profile(device).runtimes[0]
    if model_specs:
        from hwnas_deploy.models import load_model
        from hwnas_deploy.profiling import deploy as deploy_networks
        from hwnas_deploy.profiling import deployed_row

        models = [load_model(spec, calibration) for spec in model_specs]
        with Store(db) as store:
            report = deploy_networks(device, models, runtime, store, force=force, artifacts_dir=artifacts,
                                     progress=not quiet)
        rows = [{"model": m.name, "config_hash": m.config_hash, **deployed_row(report.results[m.config_hash])}
                for m in models]
        names = ["model"]
    else:
        from hwnas_deploy.search.run_folder import deploy_picked, load_front

        names = ["index", *load_front(run_dir).names]
        with Store(db) as store:
            rows = deploy_picked(run_dir, pick, device, runtime, store, force=force, artifacts_dir=artifacts,
                                 progress=not quiet)
    click.echo(_table(rows, [*names, "median_ms", "check", "config_hash", "error"]))
    if any("error" in r for r in rows):
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    from hwnas_deploy.lifetime import RunScope

    status = 0
    scope = RunScope()
    try:
        with scope:
            _main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    executor = sys.modules.get("hwnas_deploy.measurement.executor")  # loaded only by commands that measure
    if executor is not None and executor.exports_under_way():
        # a stopped pipelined run: its clean-up is done; finalising the interpreter under the export
        # (inside torch's C++) would abort the process
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(scope.exit_status(status))
    sys.exit(scope.exit_status(status))


def _main(argv: Sequence[str] | None) -> None:
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
