"""What a network needs on a device, before any board: MACs, parameters, peak SRAM, flash, the
per-layer table, and whether it fits the device profile's budget and, if not, why.

For a device running the firmware (an MCU profile) the network is converted to the firmware's
blob, whose static arena plan is the SRAM the board will use and whose size is what it must hold
in flash, so the figures are the board's own, not estimates; the layer live at the SRAM peak is
named. For other devices the graph's per-layer MACs and parameters are shown.

    a = analyze(load_model("kws.int8.tflite"), "stm32f746-disco")
    a.fits, a.reasons, a.peak_layer
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hwnas_deploy.devices import DeviceProfile, load_profile
from hwnas_deploy.mcu.blob import HEADER, blob_unpacked_layers, fit_flash
from hwnas_deploy.measurement import Network


@dataclass
class Analysis:
    network: str
    device: str
    format: str
    macs: int | None
    params: int | None
    layers: list[dict] = field(default_factory=list)
    peak_sram_bytes: int | None = None  # the arena the firmware plans (MCU formats)
    #: the same tensors planned as TFLite Micro's greedy-by-size planner would, and the largest
    #: set of them alive at once (no plan of this operator order needs less)
    tflm_greedy_sram_bytes: int | None = None
    live_sram_bytes: int | None = None
    flash_bytes: int | None = None  # the blob: weights, tensor table, operators
    #: convolutions whose weights the blob stores unpacked (faster, twice their flash), as many as
    #: the flash budget allows: what the board would be sent
    unpacked_layers: int | None = None
    sram_budget: int | None = None
    flash_budget: int | None = None
    peak_layer: int | None = None  # the first layer at the peak of live arena bytes
    reasons: list[str] = field(default_factory=list)  # why it does not fit

    @property
    def fits(self) -> bool:
        return not self.reasons

    def summary(self) -> str:
        parts = [f"{self.network} on {self.device} ({self.format})"]
        if self.macs is not None:
            parts.append(f"{self.macs / 1e6:.3f} M MACs")
        if self.params is not None:
            parts.append(f"{self.params:,} parameters")
        if self.peak_sram_bytes is not None:
            parts.append(f"peak SRAM {self.peak_sram_bytes:,} B" + (
                f" of {self.sram_budget:,}" if self.sram_budget else "") + (
                f" (TFLite Micro's greedy plan: {self.tflm_greedy_sram_bytes:,} B; largest live set "
                f"{self.live_sram_bytes:,} B)" if self.tflm_greedy_sram_bytes else ""))
        if self.flash_bytes is not None:
            parts.append(f"flash {self.flash_bytes:,} B" + (f" of {self.flash_budget:,}" if self.flash_budget else "")
                         + (f" ({self.unpacked_layers} convolutions' weights unpacked)" if self.unpacked_layers
                            else ""))
        verdict = "fits" if self.fits else "does not fit: " + "; ".join(self.reasons)
        return ", ".join(parts) + f"; {verdict}"


def analyze(network: Network, device: str | DeviceProfile, runtime: str | None = None) -> Analysis:
    """Analyse `network` for `device` (its first runtime unless `runtime` is given)."""
    from hwnas_deploy.runtimes import runtime_info

    prof = device if isinstance(device, DeviceProfile) else load_profile(device)
    runtime = runtime or prof.runtimes[0]
    prof.require_runtime(runtime)
    fmt = runtime_info(runtime).format
    sram, flash = prof.hardware.get("sram_bytes"), prof.hardware.get("flash_bytes")
    name = getattr(network, "name", None) or f"{network.space}:{network.config_hash}"
    result = Analysis(name, prof.name, fmt, network.macs, network.params, sram_budget=sram, flash_budget=flash)
    if fmt in ("blob", "blob-fp32"):
        with tempfile.TemporaryDirectory(prefix="hwnas-analyze-") as tmp:
            art = network.export(fmt, Path(tmp))
            # the blob the board would get: unpacked weights handed back to int8 until it fits
            blob = Path(art.path).read_bytes()
        if flash is not None:
            blob = fit_flash(blob, flash)
        extra = art.extra
        result.peak_sram_bytes, result.flash_bytes = int(extra["arena_bytes"]), len(blob)
        result.unpacked_layers = blob_unpacked_layers(blob)
        result.tflm_greedy_sram_bytes = extra.get("arena_greedy_bytes")
        result.live_sram_bytes = extra.get("arena_lower_bound")
        live = extra.get("op_live_bytes", [])
        result.layers = [{"layer": i, "op": op, "output": "x".join(map(str, shape)), "macs": macs,
                          "arena_live_bytes": b}
                         for i, (op, shape, macs, b) in enumerate(zip(extra["ops"], extra["op_shapes"],
                                                                      extra["op_macs"], live, strict=True))]
        if live:
            result.peak_layer = max(range(len(live)), key=lambda i: (live[i], -i))
        if sram is not None and result.peak_sram_bytes > sram:
            at = result.layers[result.peak_layer] if result.peak_layer is not None else None
            where = f" (at layer {at['layer']}, {at['op']} -> {at['output']}: {at['arena_live_bytes']:,} B live)" \
                if at else ""
            result.reasons.append(f"SRAM: the arena needs {result.peak_sram_bytes:,} B > {sram:,} B{where}")
        if flash is not None and result.flash_bytes > flash:
            result.reasons.append(f"flash: the model needs {result.flash_bytes:,} B > {flash:,} B "
                                  f"(weights {HEADER.unpack_from(blob)[13]:,} B)")
    else:
        facts = getattr(network, "facts", None)
        if facts is not None:
            result.layers = [{"layer": i, "op": layer.op, "output": "x".join(map(str, layer.output_shape)),
                              "macs": layer.macs, "params": layer.params} for i, layer in enumerate(facts.layers)]
    return result
