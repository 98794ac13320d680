#!/usr/bin/env python
"""Differentiable latency-aware search against NSGA-II on the same weights and LUT.

    .venv/bin/python tools/bench_differentiable.py --device qemu-m7 --runtime firmware --out runs/bench-diff

1. The device's LUT over every block the run can choose (`mcu-mbnet`, one resolution and width)
   is built on the device (only missing blocks are measured; cached in --out).
2. One differentiable run (`hwnas differentiable`: Gumbel-softmax, LUT latency, budget
   hypernetwork) on digits gives one architecture per budget point; each is exported, deployed
   and measured on the device.
3. The peer: NSGA-II over the same sub-space (same resolution and width) on the same two
   objectives, test accuracy from the run's own weights (`accuracy=supernet:RUN/supernet.pt@test`)
   and the same LUT, population --pop for --generations.
4. Per budget point: LUT vs measured latency (and their ratio), test accuracy, and the accuracy of
   the best NSGA-II network at no more LUT latency (the gap to the front). Monotonicity: Kendall
   tau between the budget weight and the measured latency (-1: strictly falling), and the number
   of adjacent pairs where a tighter budget measured slower.

Everything is cached in --out (store, LUT, run): a stopped benchmark resumes. Prints Markdown;
writes --out/differentiable.png (the family on the NSGA-II front; latency against budget).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from hwnas_deploy.report.figures import kendall_tau, new_figure, save_figure
from hwnas_deploy.search import parse_objective, search
from hwnas_deploy.search.differentiable import DifferentiableSettings, run_differentiable
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="qemu-m7")
    ap.add_argument("--runtime", default="firmware")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.35)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=int, default=4)
    ap.add_argument("--budgets", type=int, default=7)
    ap.add_argument("--pop", type=int, default=24)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-diff")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    settings = DifferentiableSettings(resolution=args.resolution, width=args.width, epochs=args.epochs,
                                      warmup_epochs=args.warmup_epochs, seed=args.seed)
    lut = out / f"lut-{args.device}-r{args.resolution}-w{args.width}.json"
    run = out / f"run-{args.device}"
    with Store(out / "bench.sqlite") as store:
        rows = run_differentiable(settings, lut, run, budgets=args.budgets, device=args.device,
                                  runtime=args.runtime, store=store)
        t_run = time.perf_counter() - t0
        sp = get_space(settings.space)
        objectives = [parse_objective(f"accuracy=supernet:{run / 'supernet.pt'}@test", sp, store),
                      parse_objective(f"latency=lut:{lut}", sp, store)]
        allowed = [list(range(len(p.choices))) for p in sp.params for _ in range(p.length)]
        allowed[-2] = [sp.param("w").choices.index(args.width)]
        allowed[-1] = [sp.param("r").choices.index(args.resolution)]
        t1 = time.perf_counter()
        nsga = search(sp, objectives, (), "nsga2", args.pop, args.generations, seed=args.seed, progress=True,
                      allowed=allowed)
        t_nsga = time.perf_counter() - t1
    front = sorted(nsga.front, key=lambda r: r["latency"])

    def best_within(ms: float) -> float:
        fits = [r["accuracy"] for r in front if r["latency"] <= ms + 1e-12]
        return max(fits) if fits else float("nan")

    print(f"\n{settings.space} r={args.resolution} w={args.width} on {args.device}/{args.runtime}: differentiable run "
          f"{t_run:.0f} s (LUT, {args.epochs} epochs, family measured); NSGA-II {args.pop} x {args.generations} on the "
          f"same weights and LUT: {nsga.evaluations} evaluations, {t_nsga:.0f} s, front of {len(front)}\n")
    print("| budget (latency weight) | depths | params | LUT ms | measured ms | measured / LUT | test acc % "
          "| NSGA-II best at <= LUT ms | gap (points) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        best = best_within(r["lut_ms"])
        # no NSGA-II network as fast: the family reaches latencies the front does not
        best_text, gap = "none as fast", "-"
        if not math.isnan(best):
            best_text, gap = f"{best:.2f}", f"{best - r['accuracy']:+.2f}"
        print(f"| {r['budget']['latency']:.3f} | {r['config']['d']} | {r['params']:,} | {r['lut_ms']:.3f} | "
              f"{r['measured_ms']:.3f} | {r['measured_ms'] / r['lut_ms']:.3f} | {r['accuracy']:.2f} | "
              f"{best_text} | {gap} |")
    measured = [r["measured_ms"] for r in rows]
    t = [r["budget"]["latency"] for r in rows]
    slower = sum(1 for a, b in zip(measured, measured[1:], strict=False) if b > a * 1.0005)
    distinct = len({sp.config_hash(r["config"]) for r in rows})
    tau_m, tau_l = kendall_tau(t, measured), kendall_tau(t, [r["lut_ms"] for r in rows])
    print(f"\n{distinct} distinct architectures of {len(rows)} budget points; Kendall tau(budget, measured) "
          f"{tau_m if tau_m is None else round(tau_m, 3)}, tau(budget, LUT) {tau_l if tau_l is None else round(tau_l, 3)}; "
          f"{slower} adjacent pair(s) where the tighter budget measured slower (> 0.05 %)")

    fig, (left, right) = new_figure(1, 2, figsize=(10.5, 4))
    left.plot([r["latency"] for r in front], [r["accuracy"] for r in front], "o-", ms=3, color="grey",
              label=f"NSGA-II front ({nsga.evaluations} evaluations)")
    left.plot([r["lut_ms"] for r in rows], [r["accuracy"] for r in rows], "s", color="C3",
              label="differentiable family (one run)")
    for r in rows:
        left.annotate(f"{r['budget']['latency']:.2f}", (r["lut_ms"], r["accuracy"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    left.set_xlabel(f"latency on {args.device} from the LUT (ms)")
    left.set_ylabel("test accuracy on the run's weights (%)")
    left.legend(fontsize=8)
    right.plot(t, [r["lut_ms"] for r in rows], "o-", label="LUT")
    right.plot(t, measured, "s-", label="measured")
    right.set_xlabel("budget point: weight on latency")
    right.set_ylabel(f"latency on {args.device} (ms)")
    right.legend(fontsize=8)
    print(f"\nplot: {save_figure(fig, out / 'differentiable.png')}; {time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
