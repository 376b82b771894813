"""Decoders and topic templates, with hypothesis-generated payloads against every decoder.

The property for all of them: any bytes either decode into readings or raise DecodeError with
a reason; nothing else escapes (a crash would cost the connector its run loop).
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane_mqtt.config import JsonOptions
from edgeplane_mqtt.decoders import DecodeError, JsonDecoder, NumberDecoder, TextDecoder, parse_timestamp
from edgeplane_mqtt.sparkplug import NAMESPACE, DataType, Payload
from edgeplane_mqtt.sparkplug.session import SparkplugSession, encode_command
from edgeplane_mqtt.topics import PointNameTemplate, TopicTemplate

NOW = 1_700_000_000.0
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
DECODERS = [
    NumberDecoder(),
    TextDecoder(),
    JsonDecoder(JsonOptions()),
    JsonDecoder(JsonOptions(value="v", timestamp="ts")),
    JsonDecoder(JsonOptions(fields={"a": "x.a", "b": "x.b[0]"})),
    JsonDecoder(JsonOptions(samples="s", value="v", timestamp="t")),
    JsonDecoder(JsonOptions(samples="s", timestamp="t0", period=0.5)),
]


def check_readings(readings):
    for suffix, ts, value in readings:
        assert isinstance(suffix, str) and math.isfinite(ts)
        assert isinstance(value, str) or (isinstance(value, float) and math.isfinite(value))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200))
def test_any_bytes_decode_or_raise_decode_error(payload):
    for decoder in DECODERS:
        try:
            check_readings(decoder.decode(payload, NOW))
        except DecodeError as e:
            assert e.reason and str(e)


@settings(max_examples=300, deadline=None)
@given(doc=json_values)
def test_any_json_document_decodes_or_raises_decode_error(doc):
    payload = json.dumps(doc).encode()
    for decoder in DECODERS:
        try:
            check_readings(decoder.decode(payload, NOW))
        except DecodeError as e:
            assert e.reason in {"not_json", "missing_field", "wrong_type", "not_finite", "bad_timestamp",
                                "not_a_number", "not_utf8"}


@settings(max_examples=200, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False), ts_ms=st.integers(1_000_000_000_000, 4_000_000_000_000))
def test_json_round_trip(value, ts_ms):
    decoder = JsonDecoder(JsonOptions(value="v", timestamp="ts"))
    [(suffix, ts, got)] = decoder.decode(json.dumps({"v": value, "ts": ts_ms}).encode(), NOW)
    assert suffix == "" and got == value and ts == pytest.approx(ts_ms / 1000)


@settings(max_examples=200, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_number_round_trip(value):
    assert NumberDecoder().decode(repr(value).encode(), NOW) == [("", NOW, value)]


def test_timestamps():
    assert parse_timestamp(1_700_000_000, "auto") == 1_700_000_000
    assert parse_timestamp(1_700_000_000_500, "auto") == 1_700_000_000.5
    assert parse_timestamp(1_700_000_000_000_000, "auto") == 1_700_000_000
    assert parse_timestamp(1_700_000_000_000_000_000, "auto") == 1_700_000_000
    assert parse_timestamp("2023-11-14T22:13:20Z", "auto") == 1_700_000_000
    assert parse_timestamp("2023-11-14T23:13:20+01:00", "iso8601") == 1_700_000_000
    assert parse_timestamp(1_700_000_000_000, "ms") == 1_700_000_000
    for bad, fmt in [(True, "auto"), (-1, "auto"), ("soon", "auto"), (5, "iso8601"), ("2023-01-01", "s")]:
        with pytest.raises(DecodeError) as info:
            parse_timestamp(bad, fmt)
        assert info.value.reason == "bad_timestamp"


# -- Sparkplug ------------------------------------------------------------------------------------

def birth(session: SparkplugSession, metrics: dict[str, tuple[int, int, str, object]]) -> None:
    """NBIRTH of g/n with metrics {name: (alias, datatype, field, value)}."""
    payload = Payload(seq=0, timestamp=1_700_000_000_000)
    for name, (alias, datatype, field, value) in metrics.items():
        m = payload.metrics.add(name=name, alias=alias, datatype=datatype)
        setattr(m, field, value)
    session.handle(f"{NAMESPACE}/g/NBIRTH/n", payload.SerializeToString(), NOW)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), kind=st.sampled_from(["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH"]))
def test_any_bytes_as_sparkplug_decode_or_raise_decode_error(payload, kind):
    session = SparkplugSession(rebirth_interval=0)
    birth(session, {"x": (1, DataType.Double, "double_value", 1.0)})
    topic = f"{NAMESPACE}/g/{kind}/n" + ("/d" if kind[0] == "D" else "")
    try:
        outcome = session.handle(topic, payload, NOW)
    except DecodeError as e:
        assert e.reason == "not_sparkplug"
    else:
        for r in outcome.readings:
            assert r.value is None or isinstance(r.value, (int, float, bool, str))


metric_values = st.one_of(
    st.tuples(st.just(DataType.Int32), st.just("int_value"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(DataType.Int64), st.just("long_value"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just(DataType.UInt64), st.just("long_value"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(DataType.Double), st.just("double_value"), st.floats(allow_nan=False)),
    st.tuples(st.just(DataType.Boolean), st.just("boolean_value"), st.booleans()),
    st.tuples(st.just(DataType.String), st.just("string_value"), st.text(max_size=20)),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(metric_values, min_size=1, max_size=8))
def test_generated_sparkplug_payloads_round_trip_through_births_and_aliases(values):
    session = SparkplugSession()
    born = {f"m{i}": (i + 1, dt, field, v if dt not in (DataType.Int32, DataType.Int64) else 0) for i, (dt, field, v) in enumerate(values)}
    birth(session, born)
    payload = Payload(seq=1)
    for i, (dt, field, value) in enumerate(values):
        m = payload.metrics.add(alias=i + 1, timestamp=1_700_000_000_000 + i)
        if dt == DataType.Int32:
            value_raw = value & 0xFFFFFFFF
        elif dt == DataType.Int64:
            value_raw = value & 0xFFFFFFFFFFFFFFFF
        else:
            value_raw = value
        setattr(m, field, value_raw)
    outcome = session.handle(f"{NAMESPACE}/g/NDATA/n", payload.SerializeToString(), NOW)
    assert not outcome.drops and outcome.rebirth is None
    assert [(r.metric, r.value) for r in outcome.readings] == [(f"m{i}", v) for i, (_, _, v) in enumerate(values)]


def test_sparkplug_commands_encode_by_datatype():
    for datatype, value, field, expected in [
        (DataType.Int32, -5, "int_value", 2**32 - 5), (DataType.Float, 1.5, "float_value", 1.5),
        (DataType.Boolean, 1, "boolean_value", True), (None, "on", "string_value", "on"), (None, 7, "long_value", 7),
    ]:
        metric = Payload.FromString(encode_command("m", value, datatype, NOW)).metrics[0]
        assert getattr(metric, field) == expected


# -- topic templates -----------------------------------------------------------------------------

def test_topic_templates():
    t = TopicTemplate.parse("plant/{line}/+/{point}")
    assert t.filter == "plant/+/+/+" and t.names == ("line", "point")
    assert t.match("plant/l1/x/temp") == {"line": "l1", "point": "temp"}
    assert t.match("plant/l1/x") is None and t.match("plant/l1/x/temp/more") is None
    tail = TopicTemplate.parse("logs/{machine}/{rest#}")
    assert tail.filter == "logs/+/#"
    assert tail.match("logs/m1/a/b/c") == {"machine": "m1", "rest": "a/b/c"}
    assert TopicTemplate.parse("a/#").match("a") == {}
    for bad in ["a/{x}y", "a/{x#}/b", "#/a", "a/{x}/{x}", ""]:
        with pytest.raises(ValueError):
            TopicTemplate.parse(bad)
    name = PointNameTemplate.parse("{node}/{device}/{metric}", ("node", "device", "metric"))
    assert name.render({"node": "n1", "device": "", "metric": "temp"}) == "n1/temp"
    assert name.render({"node": "n1", "device": "d", "metric": "a/b"}) == "n1/d/a/b"
