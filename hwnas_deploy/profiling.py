"""Profile sub-networks of a space (or given networks: the user's own models) on a device, and
deploy networks as they would ship: the measurement layer's loop, with sampling and checks.

Resumable by construction: the sub-networks are drawn from `seed`, and every (device, runtime,
config, threads, batch) already in the store is skipped (unless `force`). Each measurement is
committed on its own, so an interrupted run loses only the sub-network in flight; running the
same call again picks up where it stopped.

`rounds` > 1 measures every sub-network that many times, one round over all of them after the
other, so slow drifts of the host (clock, temperature, other load) fall on every network alike;
predictors then take the median over rounds (`predictors.from_store`). A sub-network with fewer
measurements than rounds is measured again on the next run. On devices that drift (not MCU
boards) a sentinel network is measured every `sentinel_every_s` seconds and its reading stored
beside each measurement (`measurement.drift`: predictors can then correct for the drift).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hwnas_deploy.devices import DeviceProfile, load_profile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.measurement import Executor, Measurer, Network, Report, SubNetwork
from hwnas_deploy.measurement.drift import sentinel_for
from hwnas_deploy.runtimes import runtime_info
from hwnas_deploy.spaces import SearchSpace, get_space
from hwnas_deploy.store import Store

ProfileReport = Report  # the name callers of `profile` have used


def sample_fitting(sp: SearchSpace, prof: DeviceProfile, n: int, seed: int, max_draws: int = 200) -> list[dict]:
    """`n` distinct sub-networks whose estimated int8 activations and weights fit the device."""
    sram, flash = prof.hardware.get("sram_bytes"), prof.hardware.get("flash_bytes")
    if sram is None and flash is None:
        raise ConfigError(f"device {prof.name!r} states no sram_bytes/flash_bytes budget to fit")

    def fits(cfg: dict) -> bool:
        return (sram is None or sp.peak_activation_bytes(cfg) <= sram) and (
            flash is None or sp.params_count(cfg) <= flash
        )

    try:
        return sp.sample_unique(n, seed, accept=fits, max_draws=max_draws * n)
    except ConfigError:
        raise ConfigError(f"fewer than {n} sampled sub-networks of {sp.name} fit {prof.name}'s budget") from None


def lab_executor(lab: str | Executor | None) -> Executor | None:
    """An executor for `lab`: a lab's address (`hwnas lab up`), an executor, or None (this process)."""
    if lab is None or isinstance(lab, Executor):
        return lab
    from hwnas_deploy.lab import LabExecutor

    return LabExecutor(lab)


def profile(
    device: str | DeviceProfile,
    space: str | SearchSpace,
    samples: int,
    runtime: str,
    store: Store,
    *,
    seed: int = 0,
    configs: list[Mapping] | None = None,
    threads: int | None = None,
    batch: int | None = None,
    force: bool = False,
    artifacts_dir: str | Path | None = None,
    progress: bool = True,
    only_fitting: bool = False,
    on_measured: Callable[[str, dict], None] | None = None,
    rounds: int = 1,
    lab: str | Executor | None = None,
    weights: str = "generated",
    sentinel_every_s: float | None = None,
    select: str = "random",
    tuning: str | Path | None = "auto",
) -> Report:
    """Measure `samples` sub-networks of `space` (drawn from `seed`, or the given `configs`).
    `select="informative"` draws them to spread out what the store's other devices predict for
    them instead (`predictors.transfer.informative`: the rows a transfer predictor learns most
    from).

    `only_fitting` draws only sub-networks whose estimated int8 footprint fits the device's
    `hardware.sram_bytes` / `flash_bytes` (the estimate is the space's; what the device then
    refuses is recorded as not fitting). `lab`: the address of a hardware lab (`hwnas lab up`)
    whose devices of this profile take the measurements in parallel; the store stays this one.
    `weights`: "generated" (latency only; an MCU board makes the weights up, the upload is
    kilobytes) or "real" (uploaded, and the board's output is also compared with the float model).
    `sentinel_every_s`: how often the space's sentinel is measured (the profile's: 5 s on host
    CPUs, a minute on phones, none on MCU boards; 0: never). `tuning` (runtime tvm): the tuning
    database its libraries are built from ("auto": the one beside the store, if it holds records
    for the device's target; "none": untuned); tuned latencies are stored as runtime `tvm@<id>`."""
    prof = device if isinstance(device, DeviceProfile) else load_profile(device)
    sp = space if isinstance(space, SearchSpace) else get_space(space)
    runtime_info(runtime)  # an unknown runtime is named as such before the device's list is
    prof.require_runtime(runtime)
    if select not in ("random", "informative"):
        raise ConfigError(f"select (--select) {select!r}: allowed: random, informative")
    if configs is None:
        if samples < 1:
            raise ConfigError(f"samples (--samples) must be at least 1, got {samples}")
        if select == "informative":
            if only_fitting:
                raise ConfigError("--select informative draws from the whole space; --fit is not taken with it")
            from hwnas_deploy.predictors.transfer import informative, sources_from_store

            target = (prof.name, runtime, threads or prof.threads, batch or prof.batch)
            configs = informative(sp.name, sources_from_store(store, sp.name, target, "all"), samples, seed)
        else:
            configs = sample_fitting(sp, prof, samples, seed) if only_fitting else sp.sample_unique(samples, seed)
    networks = [SubNetwork(sp, c) for c in configs]
    callback = None if on_measured is None else (lambda net, summary: on_measured(net.config_hash, summary))
    with Measurer(prof, store, executor=lab_executor(lab), artifacts_dir=artifacts_dir, progress=progress,
                  tuning=tuning) as m:
        return m.measure(networks, runtime, threads=threads, batch=batch, rounds=rounds, force=force,
                         weights=weights, on_measured=callback, sentinel=sentinel_for(sp),
                         sentinel_every_s=sentinel_every_s)


def profile_networks(
    device: str | DeviceProfile,
    networks: Sequence[Network],
    runtime: str,
    store: Store | None,
    *,
    threads: int | None = None,
    batch: int | None = None,
    force: bool = False,
    artifacts_dir: str | Path | None = None,
    progress: bool = True,
    rounds: int = 1,
    lab: str | Executor | None = None,
    weights: str = "generated",
    sentinel_every_s: float | None = None,
    tuning: str | Path | None = "auto",
) -> Report:
    """Measure given networks on a device (the user's own models from
    `hwnas_deploy.models.load_model`, or any `Network`), stored and skipped when stored, as
    `profile` does; the first network is the sentinel (`sentinel_every_s` as in `profile`). A
    network that cannot be exported for the runtime (a model's kind that does not reach its
    format) is refused before the device is opened."""
    prof = device if isinstance(device, DeviceProfile) else load_profile(device)
    fmt = runtime_info(runtime).format
    prof.require_runtime(runtime)
    for net in networks:
        net.check_format(fmt)
    with Measurer(prof, store, executor=lab_executor(lab), artifacts_dir=artifacts_dir, progress=progress,
                  tuning=tuning) as m:
        return m.measure(list(networks), runtime, threads=threads, batch=batch, rounds=rounds, force=force,
                         weights=weights, sentinel=networks[0] if networks else None,
                         sentinel_every_s=sentinel_every_s)


def deploy(device: str | DeviceProfile, networks: Sequence[Network], runtime: str, store: Store | None, *,
           force: bool = False, artifacts_dir: str | Path | None = None, progress: bool = True) -> Report:
    """Deploy `networks` as they would ship: exported for the device's runtime, uploaded with their
    real weights, checked on the device (the Cortex-M7 firmware's output against the host build
    of the same kernels, bit for bit) and measured into the store. A network stored before with
    generated weights (a search's validation) is measured again with its real ones."""
    report = profile_networks(device, networks, runtime, store, force=force, artifacts_dir=artifacts_dir,
                            progress=progress, weights="real").raise_if_interrupted()
    again = [n for n in networks if report.results[n.config_hash].status == "stored"
             and report.results[n.config_hash].details.get("weights") == "generated"]
    if again:
        redone = profile_networks(device, again, runtime, store, force=True, artifacts_dir=artifacts_dir,
                                progress=progress, weights="real").raise_if_interrupted()
        report.results.update(redone.results)
    return report


def deployed_row(result) -> dict:
    """A deployed network's line: its median latency and the device's output check, or why not."""
    if not result.rounds_ms:
        return {"error": result.reason or "not measured"}
    check = result.details.get("output_check") or {}
    row = {"median_ms": result.median_ms, "output_check": check or None}
    if "identical_to_host_kernels" in check:  # the board's output vs the host build's, bit for bit
        row["check"] = "bit-exact" if check["identical_to_host_kernels"] else "differs"
    return row
