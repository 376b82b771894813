"""Every signal controller on demand no policy or tuning saw, under the same timing (3 s yellow, 2 s all-red).

    python benchmarks/traffic_baselines.py --tune              # max-pressure's decision period, on TRAIN demand only
    python benchmarks/traffic_baselines.py [--nets ...] [--patterns 3] [--seconds 3600] [--json]

For each net and each of the first ``--patterns`` *evaluation* demand patterns
(``edgeplane traffic demand --split evaluation``), runs fixed, webster, actuated, max-pressure and
rl (the shipped policy; multi-signal nets: one controller instance per signal, rl only where a
policy is shipped for every signal) and prints average delay over every vehicle due, vehicles that
never entered, throughput, decision p99 and controller CPU per signal. Episodes run one after
another in this process (libsumo: one simulation at a time). ``--tune`` tries max-pressure decision
periods on two *train* patterns per net and writes the best to the plugin's ``baselines.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")

from edgeplane_traffic.demand import demand_seed, generate_demand  # noqa: E402
from edgeplane_traffic.evaluate import CONTROLLERS, onnx_infer, run_episode  # noqa: E402
from edgeplane_traffic.layout import layout_from_net, tls_ids  # noqa: E402
from edgeplane_traffic.models import PolicyFiles, shipped_policy  # noqa: E402
from edgeplane_traffic.nets import resolve  # noqa: E402
from edgeplane_traffic.programs import TUNED_FILE, tuned_max_pressure_period  # noqa: E402

SINGLE = ("single-intersection", "cologne1", "ingolstadt1")
PERIODS = (5.0, 10.0, 15.0, 20.0)


def signals(spec) -> list[str]:  # type: ignore[no-untyped-def]
    found = []
    for tls in tls_ids(spec.net):
        try:
            layout_from_net(spec.net, tls)
            found.append(tls)
        except ValueError:
            continue
    return found


def pattern(spec, split: str, index: int, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    out = folder / f"{spec.name}-{split}-{index}.rou.xml"
    lanes = [lane for tls in signals(spec) for lane in layout_from_net(spec.net, tls).lanes]
    generate_demand(spec.net, spec.route, out, begin=spec.begin, seconds=spec.seconds, seed=demand_seed(split, index),  # type: ignore[arg-type]
                    signal_lanes=lanes)
    return out


def tune(nets: list[str], seconds: int) -> None:
    tuned = json.loads(TUNED_FILE.read_text()) if TUNED_FILE.is_file() else {}
    table = tuned.setdefault("max-pressure", {})
    with tempfile.TemporaryDirectory() as tmp:
        for net in nets:
            spec = resolve(net, seconds=seconds)
            multi = len(signals(spec)) > 1
            routes = [pattern(spec, "train", i, Path(tmp)) for i in range(2)]
            scores = {}
            for period in PERIODS:
                delays = [run_episode(replace(spec, route=r), "max-pressure", seed=7, decision_period=period, all_signals=multi).avg_delay_s
                          for r in routes]
                scores[period] = sum(delays) / len(delays)
                print(f"tune {net:<20} period {period:>4.0f} s  train delay {scores[period]:8.2f} s", flush=True)
            best = min(scores, key=scores.__getitem__)
            table[net] = {"decision_period_s": best, "train_delay_s": {f"{p:g}": round(d, 2) for p, d in scores.items()},
                          "tuned_on": "train demand patterns 0-1", "command": f"python benchmarks/traffic_baselines.py --tune --nets {net}"}
            TUNED_FILE.write_text(json.dumps(tuned, indent=1) + "\n")
            print(f"wrote {TUNED_FILE} ({net}: {best:g} s)", flush=True)


def evaluate(nets: list[str], patterns: int, seconds: int, controllers: list[str]) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in nets:
            spec = resolve(net, seconds=seconds)
            ids = signals(spec)
            multi = len(ids) > 1
            policies = {}
            for tls in ids:  # a signal's own policy (train --per-signal) first
                folder = shipped_policy(net if not multi else f"{net}-{tls}")
                if folder is not None:
                    policies[tls] = PolicyFiles(folder)
            shared = shipped_policy(net) if multi else None
            if shared is not None and PolicyFiles(shared).metadata.get("shared") and set(policies) != set(ids):
                policies = {tls: PolicyFiles(shared) for tls in ids}  # one policy at every signal (train --shared)
            for i in range(patterns):
                route = pattern(spec, "evaluation", i, Path(tmp))
                for controller in controllers:
                    kwargs: dict = {"all_signals": multi}
                    if controller == "rl":
                        if set(policies) != set(ids):
                            continue
                        sessions = {p.onnx: onnx_infer(p.onnx) for p in policies.values()}  # one session per policy file
                        kwargs["infer_for"] = {tls: sessions[p.onnx] for tls, p in policies.items()}
                        first = next(iter(policies.values()))
                        kwargs["observation"] = first.metadata.get("observation_kind", "lanes")
                        kwargs["decision_period"], kwargs["detector_window"] = first.decision_period, first.detector_window
                    if controller == "max-pressure":
                        kwargs["decision_period"] = tuned_max_pressure_period(net)
                    r = run_episode(replace(spec, route=route), controller, seed=1000 + i, **kwargs)
                    rows.append({"net": net, "pattern": i, "controller": controller, "avg_delay_s": round(r.avg_delay_s, 2),
                                 "undeparted": r.undeparted, "due": r.due, "throughput": r.throughput,
                                 "shield_interventions": r.shield_interventions, "fallbacks": r.fallbacks,
                                 "decision_p99_ms": None if r.decision_p99_ms != r.decision_p99_ms else round(r.decision_p99_ms, 3),
                                 "cpu_ms_per_signal_decision_s": round(r.cpu_s_per_signal_hour / 3600 * 1000, 4), "signals": r.signals})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    out: dict = {"rows": rows, "means": {}}
    print(f"\n{'net':<20}{'controller':<14}{'avg delay s':>12}{'undeparted':>11}{'throughput':>11}{'p99 ms':>9}{'CPU ms/signal/sim s':>21}")
    for net in dict.fromkeys(r["net"] for r in rows):
        for controller in dict.fromkeys(r["controller"] for r in rows if r["net"] == net):
            sel = [r for r in rows if r["net"] == net and r["controller"] == controller]
            mean = lambda k: sum(r[k] for r in sel) / len(sel)  # noqa: E731
            p99 = [r["decision_p99_ms"] for r in sel if r["decision_p99_ms"] is not None]
            entry = {"avg_delay_s": round(mean("avg_delay_s"), 2), "undeparted": round(mean("undeparted"), 1),
                     "throughput": round(mean("throughput"), 1), "decision_p99_ms": round(max(p99), 3) if p99 else None,
                     "cpu_ms_per_signal_sim_s": round(mean("cpu_ms_per_signal_decision_s"), 4), "patterns": len(sel)}
            out["means"][f"{net}/{controller}"] = entry
            print(f"{net:<20}{controller:<14}{entry['avg_delay_s']:>12.2f}{entry['undeparted']:>11.1f}{entry['throughput']:>11.1f}"
                  f"{entry['decision_p99_ms'] if entry['decision_p99_ms'] is not None else '-':>9}{entry['cpu_ms_per_signal_sim_s']:>21.4f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=[*SINGLE, "cologne8"])
    parser.add_argument("--patterns", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    parser.add_argument("--tune", action="store_true", help="tune max-pressure on train demand and write baselines.json")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    if args.tune:
        tune(args.nets, args.seconds)
        return
    result = evaluate(args.nets, args.patterns, args.seconds, args.controllers)
    if args.json:
        print(json.dumps({"timing": {"yellow_s": 3, "all_red_s": 2, "min_green_s": 5, "max_green_s": 50},
                          "demand": "evaluation patterns", **result["means"]}))


if __name__ == "__main__":
    main()
