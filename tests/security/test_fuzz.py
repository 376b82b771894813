"""Fuzzing (issue 14, "kept fixed"): every decoder that takes bytes from the network, a device or
a file raises nothing but the project's own errors, whatever it is given.

hypothesis drives each target with a modest number of examples (the suite runs on 2 cores);
``benchmarks/fuzz_atheris.py`` runs the same targets for longer under libFuzzer. The targets
live in :mod:`tests.security.fuzz_targets` (imported by path) so both share them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

_spec = importlib.util.spec_from_file_location("fuzz_targets", Path(__file__).with_name("fuzz_targets.py"))
targets = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_targets"] = targets
_spec.loader.exec_module(targets)

# EDGEPLANE_FUZZ_EXAMPLES: benchmarks/fuzz_atheris.py runs more for its comparison
FUZZ = settings(max_examples=int(os.environ.get("EDGEPLANE_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with a few bytes flipped, cut or inserted: close enough to valid to get deep."""
    @st.composite
    def mutate(draw) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            if op == "flip":
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del data[i:i + draw(st.integers(1, 8))]
            elif op == "insert":
                data[i:i] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[i:]
        return bytes(data)

    return mutate()


# -- the sync envelope (cloud end) ------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2000))
def test_envelope_decoder_on_arbitrary_bytes(data: bytes):
    targets.envelope(data)


@FUZZ
@given(st.sampled_from(targets.envelope_seeds()).flatmap(mutations))
def test_envelope_decoder_on_damaged_envelopes(data: bytes):
    targets.envelope(data)


@FUZZ
@given(st.binary(max_size=500) | st.sampled_from(targets.block_seeds()).flatmap(mutations))
def test_block_decoder(data: bytes):
    targets.block(data)


# -- the downlink verifier ----------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=600) | st.sampled_from(targets.downlink_seeds()).flatmap(mutations))
def test_downlink_verifier_on_arbitrary_and_damaged_messages(data: bytes):
    targets.downlink(data)


@FUZZ
@given(st.fixed_dictionaries({
    "id": st.text(max_size=8) | json_values, "site": st.just("plant-1") | json_values,
    "kind": st.sampled_from(["config", "model", "command", "x"]) | json_values,
    "revision": st.integers(-5, 2**64) | json_values, "issued": st.floats() | json_values,
    "expires": st.none() | st.floats() | json_values,
    "body": st.fixed_dictionaries({}, optional={"overlay": json_values, "name": json_values, "version": json_values,
                                                 "data": json_values, "sha256": json_values, "device": json_values,
                                                 "point": json_values, "value": json_values}) | json_values,
}) | json_values)
# found by benchmarks/fuzz_atheris.py: a payload without 'expires' raised KeyError past the shape check
@example({"id": "a", "site": "plant-1", "kind": "config", "revision": 1, "issued": 0, "body": {"overlay": {}}})
def test_downlink_handles_any_signed_payload(payload):
    targets.signed_downlink(json.dumps(payload).encode())


# -- site files -------------------------------------------------------------------------------------

yaml_fragments = st.lists(st.sampled_from([
    "site: {id: s1}\n", "devices:\n", "  m: {connector: memory, points: {x: {value: 1}}}\n", "  &a [1, 2]\n", "*a\n",
    "x: &b {k: [*b]}\n", "limits: {'m/x': {max: .nan}}\n", "solutions: {t: {type: threshold, points: [m/x], high: 1}}\n",
    "!!python/object:os.system\n", "? [1, 2]\n: v\n", "key: value\nkey: again\n", "- a\n- b\n", "'\n", "\"\\x\"\n",
    "%YAML 1.1\n---\n", "--- \n...\n", "\t\n", "{{{{\n", "<<: *a\n", "profiles: [/etc/hostname]\n", "\x00", "\ufeff",
]), max_size=8).map("".join)


@FUZZ
@given(yaml_fragments | st.text(max_size=300))
# found by benchmarks/fuzz_atheris.py: a point given as a list raised TypeError in validation
@example("site: {id: s1}\ndevices:\n  m: {connector: memory, points: {x: [m/x], high: 1}}\n")
@example("site: {id: s1}\ndevices:\n  m: {connector: memory, points: [x]}\n")
@example("site: {id: s1}\nsolutions: {t: {type: 1}}\ndevices: {m: {connector: [5]}}\n")
def test_site_file_loader_on_arbitrary_text(text: str):
    targets.site_file(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=300))
def test_site_file_loader_on_arbitrary_bytes(data: bytes):
    targets.site_file(data)


@FUZZ
@given(st.fixed_dictionaries({"site": st.fixed_dictionaries({"id": st.just("s1") | json_values}) | json_values},
                             optional={"devices": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
                                       "solutions": json_values, "limits": json_values, "profiles": json_values,
                                       "sync": json_values, "simulators": json_values, "http": json_values}))
def test_site_validation_on_arbitrary_documents(document):
    targets.site_document(document)


# -- MQTT connector decoders ------------------------------------------------------------------------

@FUZZ
@given(st.sampled_from(targets.JSON_OPTIONS), st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_mqtt_json_decoder(options, payload: bytes):
    targets.mqtt_json(options, payload)


@FUZZ
@given(st.sampled_from(targets.SPARKPLUG_TOPICS), st.binary(max_size=300) | st.sampled_from(
    targets.sparkplug_seeds()).flatmap(mutations))
def test_sparkplug_decoder(topic: str, payload: bytes):
    targets.sparkplug(topic, payload)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(targets.SPARKPLUG_TOPICS), st.sampled_from(targets.sparkplug_seeds())),
                max_size=6))
def test_sparkplug_session_on_any_message_order(messages):
    targets.sparkplug_sequence(messages)


# -- Modbus register decoding -----------------------------------------------------------------------

@FUZZ
@given(st.sampled_from(targets.MODBUS_TYPES), st.sampled_from(["big", "little"]), st.sampled_from(["big", "little"]),
       st.integers(0, 15), st.lists(st.integers(0, 65535), min_size=0, max_size=12))
def test_modbus_register_decoding(type_: str, byte_order: str, word_order: str, bit: int, registers: list[int]):
    targets.modbus_registers(type_, byte_order, word_order, bit, registers)


@FUZZ
@given(st.lists(st.lists(st.integers(0, 65535), max_size=130), min_size=1, max_size=40))
def test_sunspec_discovery_on_a_hostile_device(answers: list[list[int]]):
    targets.sunspec_device(answers)
