"""A longer fuzzing run (coverage-guided, libFuzzer through atheris) of every decoder of hostile
input: the same targets as tests/security/test_fuzz.py (tests/security/fuzz_targets.py), each
for ``--seconds`` in its own process, started from valid seeds.

    python benchmarks/fuzz_atheris.py [--seconds 60] [--targets envelope,downlink,...] [--json]

Prints, per target: executions, executions per second, coverage (libFuzzer's edge counter),
corpus size, and whether anything escaped that is not the decoder's own error (a "crash": the
input is kept in benchmarks/out/fuzz/<target>/ and the traceback shown). The comparison in the
same run is the plain hypothesis run of the same target (``--hypothesis-examples``, default 300):
how many inputs each approach tries per second, and whether either finds a crash.

Needs ``atheris`` (pip install atheris; in requirements-dev.txt). Exit status 1 when a target crashed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
TARGETS_FILE = REPO / "tests" / "security" / "fuzz_targets.py"
OUT = REPO / "benchmarks" / "out" / "fuzz"


def load_targets() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_targets", TARGETS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_targets"] = module
    spec.loader.exec_module(module)
    return module


# -- bytes -> target call (the child process) -----------------------------------------------------

def one_input(targets: Any, name: str) -> Callable[[bytes], None]:
    import atheris

    def provider(data: bytes) -> Any:
        return atheris.FuzzedDataProvider(data)

    if name in ("envelope", "block", "downlink", "signed_downlink"):
        return getattr(targets, name)
    if name == "site_file":
        return targets.site_file
    if name == "mqtt_json":
        return lambda data: targets.mqtt_json(targets.JSON_OPTIONS[data[0] % len(targets.JSON_OPTIONS)] if data else
                                              targets.JSON_OPTIONS[0], data[1:])
    if name == "sparkplug":
        def sparkplug(data: bytes) -> None:
            fdp = provider(data)
            messages = []
            for _ in range(fdp.ConsumeIntInRange(1, 4)):
                topic = targets.SPARKPLUG_TOPICS[fdp.ConsumeIntInRange(0, len(targets.SPARKPLUG_TOPICS) - 1)]
                messages.append((topic, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))))
            targets.sparkplug_sequence(messages)
        return sparkplug
    if name == "modbus":
        def modbus(data: bytes) -> None:
            fdp = provider(data)
            type_ = targets.MODBUS_TYPES[fdp.ConsumeIntInRange(0, len(targets.MODBUS_TYPES) - 1)]
            orders = ("big", "little")
            targets.modbus_registers(type_, orders[fdp.ConsumeIntInRange(0, 1)], orders[fdp.ConsumeIntInRange(0, 1)],
                                     fdp.ConsumeIntInRange(0, 15),
                                     [fdp.ConsumeIntInRange(0, 65535) for _ in range(fdp.ConsumeIntInRange(0, 12))])
        return modbus
    if name == "sunspec":
        def sunspec(data: bytes) -> None:
            fdp = provider(data)
            answers = []
            for _ in range(fdp.ConsumeIntInRange(1, 30)):
                answers.append([fdp.ConsumeIntInRange(0, 65535) for _ in range(fdp.ConsumeIntInRange(0, 130))])
            targets.sunspec_device(answers)
        return sunspec
    raise SystemExit(f"unknown target {name!r}; known: {', '.join(TARGET_NAMES)}")


TARGET_NAMES = ["envelope", "block", "downlink", "signed_downlink", "site_file", "mqtt_json", "sparkplug", "modbus",
                "sunspec"]


def seeds(targets: Any, name: str) -> list[bytes]:
    if name == "envelope":
        return targets.envelope_seeds()
    if name == "block":
        return targets.block_seeds()
    if name == "downlink":
        return targets.downlink_seeds()
    if name == "signed_downlink":
        return [json.dumps({"id": "a", "site": "plant-1", "kind": "config", "revision": 1, "issued": 0, "expires": None,
                            "body": {"overlay": {"limits": {"m/x": {"max": 5}}}}}).encode()]
    if name == "site_file":
        return [b"site: {id: s1}\ndevices:\n  m: {connector: memory, points: {x: {value: 1, limits: {max: 5}}}}\n"
                b"solutions: {t: {type: threshold, points: [m/x], high: 1}}\n", b"a: &a [1, 2]\nb: [*a, *a]\n"]
    if name == "mqtt_json":
        return [b'\x02{"data": {"temp": 21.5}, "ts": 1700000000}', b'\x05{"s": [{"v": 1, "t": 1}, {"v": 2, "t": 2}]}']
    if name == "sparkplug":
        return [b"\x00" + s for s in targets.sparkplug_seeds()]
    return [b"\x00" * 16, bytes(range(64))]


def child(name: str, seconds: int, workdir: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["edgeplane", "edgeplane_mqtt", "edgeplane_modbus", "fuzz_targets"]):
        targets = load_targets()
        # imported inside the block so that they are instrumented (the targets import them lazily)
        import edgeplane.config  # noqa: F401
        import edgeplane.sync.downlink  # noqa: F401
        import edgeplane_modbus.codec  # noqa: F401
        import edgeplane_modbus.sunspec  # noqa: F401
        import edgeplane_mqtt.decoders  # noqa: F401
        import edgeplane_mqtt.sparkplug.session  # noqa: F401
    function = one_input(targets, name)
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds(targets, name)):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=20",
                   "-rss_limit_mb=2048", f"-artifact_prefix={workdir}/", "-max_len=4096"], function)
    atheris.Fuzz()


# -- the parent: one child per target, a table -------------------------------------------------------

def run_target(name: str, seconds: int) -> dict[str, Any]:
    workdir = OUT / name
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("crash-*"):
        old.unlink()
    began = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--seconds", str(seconds)],
                          capture_output=True, text=True, timeout=seconds + 300, cwd=REPO)
    wall = time.monotonic() - began
    log = proc.stderr + proc.stdout
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    coverage = [int(c) for c in re.findall(r"cov: (\d+)", log)]
    corpus = [int(c) for c in re.findall(r"corp: (\d+)", log)]
    crashes = sorted(str(p.relative_to(REPO)) for p in workdir.glob("crash-*"))
    execs = int(stat.get("number_of_executed_units", 0))
    row = {"target": name, "seconds": round(wall, 1), "executions": execs,
           "executions_per_s": round(execs / max(float(seconds), 1e-9)),
           "coverage_edges": max(coverage, default=0), "corpus": max(corpus, default=0),
           "crashed": proc.returncode != 0, "crash_files": crashes}
    if proc.returncode != 0:
        traceback = log[log.find("Traceback"):] if "Traceback" in log else log[-2000:]
        row["error"] = traceback[:3000]
    return row


def hypothesis_rate(name: str, examples: int) -> dict[str, Any]:
    """The same target under plain hypothesis (the test suite's driver), for the comparison."""
    test = {"envelope": "test_envelope_decoder_on_damaged_envelopes", "block": "test_block_decoder",
            "downlink": "test_downlink_verifier_on_arbitrary_and_damaged_messages",
            "signed_downlink": "test_downlink_handles_any_signed_payload",
            "site_file": "test_site_file_loader_on_arbitrary_text", "mqtt_json": "test_mqtt_json_decoder",
            "sparkplug": "test_sparkplug_session_on_any_message_order", "modbus": "test_modbus_register_decoding",
            "sunspec": "test_sunspec_discovery_on_a_hostile_device"}[name]
    env = dict(os.environ, EDGEPLANE_FUZZ_EXAMPLES=str(examples))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "600",
                           "--durations=0", "--durations-min=0", f"tests/security/test_fuzz.py::{test}"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    # the test's own call phase, not pytest's start-up
    call = re.search(r"([\d.]+)s call", proc.stdout)
    seconds = float(call.group(1)) if call else float("nan")
    return {"hypothesis_examples": examples, "hypothesis_seconds": round(seconds, 2),
            "hypothesis_examples_per_s": round(examples / seconds, 1) if seconds else None,
            "hypothesis_passed": proc.returncode == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="libFuzzer time per target")
    parser.add_argument("--targets", default=",".join(TARGET_NAMES), help="comma-separated subset")
    parser.add_argument("--hypothesis-examples", type=int, default=300, help="examples for the comparison run (0: skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, OUT / args.child)
        return
    try:
        import atheris  # noqa: F401
    except ImportError:
        raise SystemExit("atheris is not installed: pip install atheris (it is in requirements-dev.txt)") from None
    rows = []
    for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
        row = run_target(name, args.seconds)
        if args.hypothesis_examples:
            row.update(hypothesis_rate(name, args.hypothesis_examples))
        rows.append(row)
        print(f"{name:16} {row['executions']:>10,} execs {row['executions_per_s']:>8,}/s  cov {row['coverage_edges']:>6}  "
              f"corpus {row['corpus']:>5}  {'CRASH ' + ', '.join(row['crash_files']) if row['crashed'] else 'no crash'}"
              + (f"   | hypothesis {row['hypothesis_examples_per_s']:>7}/s "
                 f"{'passed' if row['hypothesis_passed'] else 'FAILED'}" if args.hypothesis_examples else ""),
              flush=True)
        if row["crashed"]:
            print(row.get("error", ""), file=sys.stderr)
    if args.json:
        print(json.dumps({"seconds_per_target": args.seconds,
                          "targets": {r["target"]: {k: v for k, v in r.items() if k not in ("target", "error")}
                                      for r in rows},
                          "crashes": sum(r["crashed"] for r in rows)}))
    if any(r["crashed"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
