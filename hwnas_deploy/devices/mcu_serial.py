"""The `mcu-serial` driver: a Cortex-M board running our firmware, over a pyserial URL.

Profile `connection`:
    url: socket://127.0.0.1:4321 | /dev/ttyACM0 | /dev/pts/5   (a running board)
    simulator: qemu-mps2-an500       (no url: `hwnas_deploy.sim` gives the url of the twin `hwnas sim
                                      start` left running, else of a private QEMU twin)
    icount_shift: 7                  (a QEMU twin's: its timer ticks -> instructions)
    baudrate: 921600                 (a real board's serial line: the firmware's, `hwnas firmware build --baud`)
Profile `hardware` gives the budget a sub-network must fit: `sram_bytes` (arena), `flash_bytes`
(blob), and `clock_hz` to turn counts into milliseconds.

On a real board the firmware counts core cycles (DWT->CYCCNT). On the QEMU twin it counts
timer ticks under -icount, which this driver converts to *instructions*; the measurement's
details say which (`count_unit`), since instructions are not M7 pipeline cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas_deploy.allowed import number
from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices.base import Driver
from hwnas_deploy.errors import DeviceError
from hwnas_deploy.mcu.blob import blob_unpacked_layers, fit_flash
from hwnas_deploy.mcu.firmware import DEFAULT_BAUD
from hwnas_deploy.mcu.link import (
    ICOUNT_SHIFT,
    MADE_ARRAYS,
    Q15_WEIGHTS,
    BoardInfo,
    BoardResetError,
    LoadResult,
    McuLink,
    ticks_to_instructions,
)
from hwnas_deploy.mcu.weights import WEIGHT_SEED, Made, check_weights, made_blob, made_ranges
from hwnas_deploy.measure import MeasureSettings, Summary, summarize

MAX_REPEATS_PER_RUN = 64


class DoesNotFitError(DeviceError):
    """The sub-network needs more SRAM or flash than the device has; `details` has the numbers."""

    def __init__(self, reason: str, details: dict[str, int]):
        self.reason, self.details = reason, details
        super().__init__(f"does not fit: {reason}")


@dataclass
class Deployed:
    artifact: Artifact
    blob: bytes  # what the board holds (with generated weights: the bytes it made in place)
    load: LoadResult
    weights: str = "real"
    made: list[Made] = field(default_factory=list)


class McuSerialDriver(Driver):
    def open(self) -> dict[str, Any]:
        conn = self.profile.connection
        url = conn.get("url")
        if not url:
            raise DeviceError(f"device {self.profile.name!r}: connection needs a serial 'url' "
                              "(or simulator: qemu-mps2-an500, started by hwnas_deploy.sim)")
        self.url = url
        timeout = conn.get("timeout_s", 5.0)
        number(0, text="seconds to wait for each reply, a number > 0").check(
            timeout, f"device {self.profile.name!r}: connection.timeout_s")
        self.link = McuLink.open(url, timeout=float(timeout), baudrate=int(conn.get("baudrate", DEFAULT_BAUD)))
        self.info: BoardInfo = self.link.hello()
        hw = self.profile.hardware
        self.sram_budget = int(hw.get("sram_bytes", self.info.arena_capacity))
        self.flash_budget = int(hw.get("flash_bytes", self.info.blob_capacity))
        self.clock_hz = int(hw.get("clock_hz", self.info.clock_hz))
        return {
            "url": url,
            "board": self.info.board,
            "core": self.info.core,
            "firmware": self.info.firmware,
            "timer": self.info.timer,
            "board_clock_hz": self.info.clock_hz,
            "sram_budget": self.sram_budget,
            "flash_budget": self.flash_budget,
        }

    def deploy(self, artifact: Artifact, threads: int, weights: str = "real") -> Deployed:
        """Upload the artifact's blob; with `weights="generated"` the board makes up the int8
        weights and the int32 arrays (mcu/weights.py) and only the rest of the blob travels."""
        if artifact.format not in ("blob", "blob-fp32"):
            raise DeviceError(f"{self.profile.name} runs firmware model blobs, not {artifact.format!r}")
        blob = Path(artifact.path).read_bytes()
        # weights stored unpacked for speed go back to int8, fewest-pixel layers first, until the
        # blob fits this board (a network the int8 budget admits is never refused for them)
        blob = fit_flash(blob, min(self.flash_budget, self.info.blob_capacity))
        arena = int(artifact.extra.get("arena_bytes", 0))
        limits = [
            ("arena", arena, self.sram_budget, "SRAM budget"),
            ("arena", arena, self.info.arena_capacity, "firmware arena capacity"),
            ("blob", len(blob), self.flash_budget, "flash budget"),
            ("blob", len(blob), self.info.blob_capacity, "firmware blob buffer (uploads are held in RAM)"),
        ]
        over = [f"{what} {size} B > {name} {limit} B" for what, size, limit, name in limits if size > limit]
        if over:
            raise DoesNotFitError("; ".join(over), {"arena_bytes": arena, "blob_bytes": len(blob),
                                                    "sram_budget": self.sram_budget,
                                                    "flash_budget": self.flash_budget})
        made: list[Made] = []
        if check_weights(weights) == "generated":
            protocol = self.info.protocol
            made = made_ranges(blob, int32=protocol >= MADE_ARRAYS, q15=protocol >= Q15_WEIGHTS)
            blob = made_blob(blob, made, WEIGHT_SEED)
        handle = Deployed(artifact, blob, LoadResult(0, 0, 0, 0), "generated" if made else "real", made)
        handle.load = self._load(handle)
        return handle

    def _load(self, handle: Deployed) -> LoadResult:
        # a blob with its real weights is worth keeping in a board's flash slot (its upload takes
        # minutes at 115200 baud; it is a model deployed): after a power cycle it is still there
        keep = handle.weights == "real" and self.info.flash_slot > 0
        try:
            return self.link.load(handle.blob, made=handle.made, seed=WEIGHT_SEED, keep=keep)
        except BoardResetError:
            self.info = self.link.hello()  # reset during upload: start the upload again, once
            return self.link.load(handle.blob, made=handle.made, seed=WEIGHT_SEED, keep=keep)

    def _count_unit(self) -> str:
        return "instructions" if self.info.timer == "icount" else "cycles"

    def _to_count(self, raw: int) -> float:
        if self.info.timer == "icount":
            return ticks_to_instructions(raw, int(self.profile.connection.get("icount_shift", ICOUNT_SHIFT)))
        return float(raw)

    def measure(self, handle: Deployed, settings: MeasureSettings) -> Summary:
        repeats = max(3, min(settings.min_repeats, MAX_REPEATS_PER_RUN))
        warmup = min(settings.warmup, 2)
        try:
            result, layers = self._run(warmup, repeats)
        except BoardResetError:
            # the board restarted mid-run: reload what it lost and measure again
            self.info = self.link.hello()
            self._load(handle)
            result, layers = self._run(warmup, repeats)
        check = self.check_output(handle)
        counts = [self._to_count(c) for c in result.cycles]
        summary = summarize([c / self.clock_hz * 1e3 for c in counts], settings.outlier_fence, settings.target_ci)
        summary.details = {
            "count_unit": self._count_unit(),
            "counts": counts,
            "clock_hz": self.clock_hz,
            "layer_counts": [self._to_count(c) for c in layers.layer_cycles],
            "layer_ops": handle.artifact.extra.get("ops", []),
            **{f"layer_{key[3:]}": handle.artifact.extra[key] for key in ("op_shapes", "op_macs", "op_live_bytes")
               if key in handle.artifact.extra},
            "arena_bytes": handle.load.arena_bytes,
            "blob_bytes": len(handle.blob),
            "unpacked_layers": blob_unpacked_layers(handle.blob),
            "weights": handle.weights,
            **({"weights_seed": WEIGHT_SEED} if handle.weights == "generated" else {}),
            "upload": {"sent_bytes": handle.load.sent_bytes, "generated_bytes": handle.load.generated_bytes,
                       "already_held": handle.load.already_held, "seconds": round(handle.load.seconds, 3),
                       "kept_in_flash": handle.load.kept},
            "board": self.info.board,
            "output_check": check,
        }
        return summary

    def check_output(self, handle: Deployed, seed: int = 0) -> dict[str, Any]:
        """INFER one input on the board: its output must equal the host build of the same
        kernels on the same blob bit for bit (else DeviceError). With real weights, how far it
        lies from onnxruntime running the float model on the same (dequantised) input is
        reported, in output units and in int8 steps: float and int8 networks differ by
        quantisation, so that is a figure, not a check (generated weights have no float model).
        With generated weights the input is RUN's own, written by the board (protocol 3): a
        latency-only measurement uploads no input either."""
        import tempfile

        import numpy as np

        from hwnas_deploy.mcu.host import HostBlobRunner

        inp, out = handle.artifact.inputs[0], handle.artifact.outputs[0]
        out_bytes = int(np.prod(out.shape)) * (1 if out.quantization else 4)
        if out_bytes > self.info.max_payload:
            # a single block measured alone (a LUT entry) can output a whole activation map; the
            # firmware answers INVOKE in one reply, so such an output cannot be compared here
            return {"skipped": f"the output ({out_bytes} bytes) exceeds one reply ({self.info.max_payload} bytes)"}
        (in_scale, in_zp), (out_scale, out_zp) = inp.quantization or (1.0, 0), out.quantization or (1.0, 0)
        host_runner = HostBlobRunner(handle.blob)
        if handle.weights == "generated" and inp.quantization and self.info.protocol >= MADE_ARRAYS:
            # latency only: the board writes RUN's input itself, nothing is uploaded
            board = np.frombuffer(self.link.infer_run_input(), dtype=np.int8)
            x, given = host_runner.run_input(), "the run's (made on the board)"
        else:
            x_float = np.random.default_rng(seed).standard_normal(inp.shape).astype(np.float32)
            if inp.quantization:
                x = np.clip(np.round(x_float / in_scale) + in_zp, -128, 127).astype(np.int8)
            else:
                x = x_float
            board = np.frombuffer(self.link.infer(x.tobytes()), dtype=x.dtype)
            given = "uploaded"
        host = host_runner.invoke(x, board.size)
        if not np.array_equal(board, host):
            raise DeviceError(
                f"{self.profile.name}: the board's output differs from the host build of the same kernels in "
                f"{int(np.sum(board != host))} of {board.size} values (firmware and host runtime out of step?)"
            )
        result: dict[str, Any] = {"identical_to_host_kernels": True, "input": given}
        art = handle.artifact
        from hwnas_deploy.spaces import space_names

        if handle.weights == "real" and art.space in space_names() and art.config is not None:
            from hwnas_deploy.export import EXPORT_LOCK, export_subnet
            from hwnas_deploy.runtimes import load_runner
            from hwnas_deploy.spaces import get_space

            with tempfile.TemporaryDirectory(prefix="hwnas-check-") as tmp:
                with EXPORT_LOCK:  # a pipelined export may be building the next network
                    onnx = export_subnet(get_space(art.space), art.config, "onnx", tmp)
                x_nchw = ((x.astype(np.float32) - in_zp) * in_scale).transpose(0, 3, 1, 2)
                ref = load_runner(onnx)(np.ascontiguousarray(x_nchw)).ravel().astype(np.float64)
            got = (board.astype(np.float64) - out_zp) * out_scale
            err = float(np.max(np.abs(got - ref)))
            result.update({
                "max_abs_vs_onnxruntime": err,
                "cosine_vs_onnxruntime": float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref) + 1e-30)),
            })
            if out.quantization:
                result["max_steps_vs_onnxruntime"] = err / out_scale
        return result

    def _run(self, warmup: int, repeats: int):
        """Whole-network counts without per-layer timers (they cost two reads per layer), then
        one instrumented run for the per-layer breakdown."""
        return self.link.run(warmup, repeats, per_layer=False), self.link.run(0, 1, per_layer=True)

    def infer(self, handle: Deployed, x_nhwc: bytes) -> bytes:
        return self.link.infer(x_nhwc)

    def close(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            link.close()
