"""Reading the output of TFLite's `benchmark_model`, the tool people push to phones.

Its log lines, with or without the `INFO: ` prefix that newer builds add (numbers may be in
exponent form, as C++ streams print doubles):

    count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415
    Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
    Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832

The first `count=` line is the warm-up phase, the last the measured runs. With
`--enable_op_profiling=true` it adds tables (tab-separated columns named by a header row):

    ============================== Run Order ==============================
    \t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]
    \t CONV_2D\t 0.123\t 0.120\t 10.1%\t 10.1%\t 0.000\t 1\t[conv1]
    ...
    ============================== Summary by node type ==============================
    \t[Node type]\t[count]\t[avg ms]\t[avg %]\t[cdf %]\t[mem KB]\t[times called]

Older builds have a `[start]` column as well; columns are read by their header names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hwnas_deploy.errors import DeviceError

_PREFIX = re.compile(r"^(?:INFO|WARNING|VERBOSE): ")
_STATS = re.compile(r"^count=\d+")
_PAIR = re.compile(r"(\w+)=([-+0-9.eE]+|nan|inf)")
_TIMINGS = re.compile(r"Inference timings in us: (.*)$")
_MEMORY = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=(\S+) overall=(\S+)")
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: (\S+)")
_TABLE = re.compile(r"^=+ (.+?) =+$")
_ERROR = re.compile(r"^(?:ERROR: |E tensorflow|Failed |.*Segmentation fault)")


class BenchmarkOutputError(DeviceError):
    """benchmark_model's output has no measurement (it failed, or is not benchmark_model)."""


@dataclass
class RunStats:
    """One `count=...` line; times in microseconds."""

    count: int
    values: dict[str, float]

    def __getattr__(self, name: str) -> float:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class BenchmarkResult:
    warmup: RunStats | None
    runs: RunStats
    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_peak_mb: float | None = None
    #: op-profiling tables by title ("Run Order", "Top by Computation Time", "Summary by node type"),
    #: of the measured runs (benchmark_model prints the initialisation's tables first)
    tables: dict[str, list[dict[str, str | float]]] = field(default_factory=dict)
    gpu_delegate: str | None = None  # "applied" | "partial" | "unsupported" when the log says
    log: list[str] = field(default_factory=list, repr=False)

    @property
    def median_us(self) -> float:
        """The median of the measured runs (builds without percentiles: their average)."""
        return self.runs.values.get("median", self.runs.values["avg"])

    def layer_details(self) -> dict:
        """The op profile's "Run Order" as per-layer measurement details (ns per operator, in
        execution order; the whole run's median beside them), or {} without op profiling."""
        order = self.tables.get("Run Order")
        if not order:
            return {}
        return {"count_unit": "ns", "counts": [1000.0 * self.median_us],
                "layer_ops": [str(r.get("node type", "?")) for r in order],
                "layer_names": [str(r.get("Name", "")) for r in order],
                "layer_counts": [1e6 * float(r.get("avg ms", 0.0)) for r in order],
                "layer_source": "benchmark_model --enable_op_profiling"}

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("warmup", "runs", "log", "tables")}
        out["runs"] = {"count": self.runs.count, **self.runs.values}
        if self.warmup:
            out["warmup"] = {"count": self.warmup.count, **self.warmup.values}
        if self.tables:
            out["op_profile"] = self.tables
        return out


def _number(text: str) -> float | str:
    text = text.strip().rstrip("%")
    try:
        return float(text)
    except ValueError:
        return text


def _parse_table(header: str, rows: list[str]) -> list[dict[str, str | float]]:
    names = [c.strip().strip("[]") for c in header.split("\t") if c.strip()]
    table = []
    for row in rows:
        cells = [c.strip() for c in row.split("\t") if c.strip()]
        if len(cells) < len(names):
            continue
        if len(cells) > len(names):  # a name with tabs in it: the last column takes the rest
            cells = cells[: len(names) - 1] + ["\t".join(cells[len(names) - 1:])]
        row_values: dict[str, str | float] = {}
        for n, c in zip(names, cells, strict=True):
            row_values[n] = c[1:-1] if n == "Name" and c.startswith("[") and c.endswith("]") else (
                c if n.lower() in ("node type", "name") else _number(c))
        table.append(row_values)
    return table


def parse(text: str) -> BenchmarkResult:
    """Parse benchmark_model's stdout(+stderr). Raises BenchmarkOutputError with the tool's own
    error lines when there is no measurement in it."""
    lines = [_PREFIX.sub("", line.rstrip("\r")) for line in text.splitlines()]
    stats: list[RunStats] = []
    timings: dict[str, float] = {}
    memory = peak = None
    tables: dict[str, list] = {}
    gpu = None
    i = 0
    while i < len(lines):
        plain = lines[i].strip()
        if _STATS.match(plain):
            values = {k: float(v) for k, v in _PAIR.findall(plain)}
            stats.append(RunStats(int(values.pop("count")), values))
        elif m := _TIMINGS.search(plain):
            for part in m.group(1).split(","):
                key, _, value = part.partition(":")
                if value.strip():
                    timings[key.strip()] = float(value)
        elif m := _MEMORY.search(plain):
            memory = (float(m.group(1)), float(m.group(2)))
        elif m := _PEAK.search(plain):
            peak = float(m.group(1))
        elif "GPU delegate" in plain or "GPU acceleration" in plain:
            if "unsupported" in plain or "Failed" in plain or "failed" in plain:
                gpu = "unsupported"
            elif "completely executed" in plain:
                gpu = "applied"
            elif "partially" in plain or "applied" in plain.lower():
                gpu = gpu or "partial"
        elif m := _TABLE.match(plain):
            title = m.group(1)
            header = lines[i + 1] if i + 1 < len(lines) else ""
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].strip() and not _TABLE.match(lines[j].strip()):
                rows.append(lines[j])
                j += 1
            tables[title] = _parse_table(header, rows)  # the measured runs' tables come last
            i = j
            continue
        i += 1
    stats = [s for s in stats if "avg" in s.values]
    if not stats:
        errors = [ln for ln in lines if _ERROR.match(ln.strip())]
        tail = "\n".join(errors or [ln for ln in lines if ln.strip()][-8:])
        raise BenchmarkOutputError(f"benchmark_model printed no timings:\n{tail}")
    return BenchmarkResult(
        warmup=stats[0] if len(stats) > 1 else None,
        runs=stats[-1],
        init_us=timings.get("Init"),
        first_us=timings.get("First inference"),
        warmup_avg_us=timings.get("Warmup (avg)"),
        inference_avg_us=timings.get("Inference (avg)"),
        memory_init_mb=memory[0] if memory else None,
        memory_overall_mb=memory[1] if memory else None,
        memory_peak_mb=peak,
        tables=tables,
        gpu_delegate=gpu,
        log=lines,
    )
