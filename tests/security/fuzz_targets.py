"""Fuzz targets shared by tests/security/test_fuzz.py (hypothesis) and benchmarks/fuzz_atheris.py
(libFuzzer through atheris). Each target feeds its input to one decoder and fails (raises
``AssertionError`` with the input's shape) only when something escapes that is not the
decoder's own error type: EnvelopeError, DownlinkRefused, SiteError, DecodeError, SunSpecError.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane.errors import SiteError
from edgeplane.sync.codec import EnvelopeError, Record, decode_block, decode_envelope, encode_batch, encode_envelope, \
    encode_events
from edgeplane.sync.signing import DownlinkRefused, key_id, sign, verify

__all__ = [
    "JSON_OPTIONS", "MODBUS_TYPES", "SPARKPLUG_TOPICS", "block", "block_seeds", "downlink", "downlink_seeds", "envelope",
    "envelope_seeds", "modbus_registers", "mqtt_json", "signed_downlink", "site_document", "site_file", "sparkplug",
    "sparkplug_seeds", "sparkplug_sequence", "sunspec_device",
]


def _escaped(what: str, data: Any, error: BaseException) -> AssertionError:
    shown = repr(data)
    return AssertionError(f"{what}: {type(error).__name__}: {error} escaped for input {shown[:300]}")


# -- sync envelope --------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def envelope_seeds() -> list[bytes]:
    from edgeplane import Batch
    from edgeplane.bus import Event

    raw, n = encode_batch(Batch("inv1/ac_power", np.array([1.0, 2.0, 3.0]), np.array([10.5, np.nan, 12.0]),
                                np.array([0, 0, 1], dtype=np.uint8), "W"))
    events, m = encode_events([Event("alerts/hot", 1.0, "alarm", "hot", "warning", {"value": 61.0})])
    records = [Record("inv1/ac_power", 1, "raw", 2, n, 0.5, raw), Record("alerts/hot", 2, "events", 0, m, 0.7, events)]
    return [encode_envelope("plant-1", 9.0, records, codec) for codec in ("zstd", "lz4", "none")]


@lru_cache(maxsize=1)
def block_seeds() -> list[bytes]:
    seeds = []
    for envelope_bytes in envelope_seeds()[2:]:
        seeds += [r.block for r in decode_envelope(envelope_bytes).records]
    return seeds


def envelope(data: bytes) -> None:
    try:
        decoded = decode_envelope(data)
        for record in decoded.records:
            decode_block(record.block)
    except EnvelopeError:
        pass
    except Exception as e:  # noqa: BLE001 - the point of the target
        raise _escaped("decode_envelope", data, e) from e


def block(data: bytes) -> None:
    try:
        decode_block(data)
    except EnvelopeError:
        pass
    except Exception as e:  # noqa: BLE001
        raise _escaped("decode_block", data, e) from e


# -- downlink ------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _keys() -> tuple[Any, dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # fixed: runs are reproducible
    public = private.public_key()
    return private, {key_id(public): public}


@lru_cache(maxsize=1)
def downlink_seeds() -> list[bytes]:
    private, _ = _keys()
    return [
        sign(private, site="plant-1", kind="config", body={"overlay": {"limits": {"m/x": {"max": 5}}}}, revision=3),
        sign(private, site="plant-1", kind="command", body={"device": "m", "point": "x", "value": 1}, revision=4, ttl=60),
        sign(private, site="plant-1", kind="model", body={"name": "m", "version": "1", "sha256": "0" * 64,
                                                          "data": base64.b64encode(b"onnx").decode()}, revision=5),
    ]


def downlink(data: bytes) -> None:
    _, trusted = _keys()
    try:
        verify(data, trusted, site="plant-1", now=time.time())
    except DownlinkRefused:
        pass
    except Exception as e:  # noqa: BLE001
        raise _escaped("verify", data, e) from e
    _handle(data)


def signed_downlink(payload: bytes) -> None:
    """Sign ``payload`` (any bytes) with the trusted key, so the fuzzer gets past the signature."""
    private, trusted = _keys()
    data = json.dumps({"v": 1, "key": next(iter(trusted)), "payload": base64.b64encode(payload).decode(),
                       "sig": base64.b64encode(private.sign(payload)).decode()}).encode()
    _handle(data)


@lru_cache(maxsize=1)
def _registry() -> Any:
    from edgeplane.plugins import Plugins

    return Plugins.load(entry_points=False).registry


_LOCAL_SITE = {"site": {"id": "plant-1"},
               "devices": {"m": {"connector": "memory", "points": {"x": {"access": "rw", "value": 1.0}}}},
               "solutions": {"t": {"type": "threshold", "points": ["m/x"], "high": 5}}}


def _handle(data: bytes) -> None:
    from edgeplane.config import parse_site
    from edgeplane.sync.downlink import Downlink

    _, trusted = _keys()
    folder = Path(tempfile.mkdtemp(prefix="fuzz-downlink-"))

    async def apply_config(document: dict[str, Any]) -> None:
        parse_site(document, _registry(), source="<fuzz>", base_dir=folder)

    async def apply_model(**kw: Any) -> None:
        raise ValueError("not an ONNX model")

    async def execute_command(device: str, point: str, value: Any) -> str:
        return "ok"

    try:
        dl = Downlink(site_id="plant-1", store_dir=folder, trusted=trusted, base_site=_LOCAL_SITE,
                      apply_config=apply_config, apply_model=apply_model, execute_command=execute_command,
                      on_refused=lambda reason, message: None)
        try:
            dl.submit(data)
            asyncio.run(dl.handle(data, now=time.time()))
            dl.flush()
        except Exception as e:  # noqa: BLE001 - Downlink.handle must never raise
            raise _escaped("Downlink.handle", data, e) from e
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- site files ----------------------------------------------------------------------------------

def site_file(data: bytes) -> None:
    from edgeplane.config import load_site

    folder = Path(tempfile.mkdtemp(prefix="fuzz-site-"))
    try:
        path = folder / "site.yaml"
        path.write_bytes(data)
        load_site(path, _registry())
    except SiteError:
        pass
    except Exception as e:  # noqa: BLE001
        raise _escaped("load_site", data, e) from e
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def site_document(document: Any) -> None:
    from edgeplane.config import parse_site

    try:
        parse_site(document, _registry(), source="<fuzz>", base_dir=Path(tempfile.gettempdir()) / "no-such-site")
    except SiteError:
        pass
    except Exception as e:  # noqa: BLE001
        raise _escaped("parse_site", document, e) from e


# -- MQTT connector decoders ----------------------------------------------------------------------

def _json_options() -> list[Any]:
    from edgeplane_mqtt.config import JsonOptions

    return [JsonOptions.model_validate(o) for o in (
        {}, {"value": None}, {"value": "data.temp", "timestamp": "ts"},
        {"value": "values[0].v", "timestamp": "t", "timestamp_format": "ms"},
        {"fields": {"a": "x", "b": "y[1]"}, "timestamp": "time", "timestamp_format": "iso8601"},
        {"samples": "s", "value": "v", "timestamp": "t", "timestamp_format": "auto"},
        {"samples": "s", "value": None, "timestamp": "t0", "period": "1s", "timestamp_format": "ns"},
        {"timestamp": "ts", "timestamp_format": "s"}, {"timestamp": "ts", "timestamp_format": "us"},
    )]


try:
    JSON_OPTIONS = _json_options()
except ImportError:  # the MQTT connector is not installed: its targets are skipped
    JSON_OPTIONS = []


def mqtt_json(options: Any, payload: bytes) -> None:
    from edgeplane_mqtt.decoders import DecodeError, JsonDecoder

    try:
        readings = JsonDecoder(options).decode(payload, now=time.time())
        for _, ts, value in readings:
            assert isinstance(ts, float) or isinstance(ts, int), f"timestamp {ts!r} is not a number"
            assert isinstance(value, (float, int, str)) and not isinstance(value, bool), f"value {value!r}"
    except DecodeError:
        pass
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _escaped("JsonDecoder.decode", payload, e) from e


SPARKPLUG_TOPICS = ["spBv1.0/g/NBIRTH/n", "spBv1.0/g/NDATA/n", "spBv1.0/g/NDEATH/n", "spBv1.0/g/DBIRTH/n/d",
                    "spBv1.0/g/DDATA/n/d", "spBv1.0/g/DDEATH/n/d", "spBv1.0/g/NCMD/n", "spBv1.0/g/DDATA/n",
                    "spBv1.0/g/NDATA/n/d", "spBv1.0/g", "spBv1.0//NBIRTH/", "other/topic", "spBv1.0/g/XYZ/n"]


@lru_cache(maxsize=1)
def sparkplug_seeds() -> list[bytes]:
    from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, DataType, Payload

    seeds = []
    birth = Payload(timestamp=1_700_000_000_000, seq=0)
    birth.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=0)
    birth.metrics.add(name="temp", alias=1, datatype=DataType.Double, double_value=20.5)
    birth.metrics.add(name="on", alias=2, datatype=DataType.Boolean, boolean_value=True)
    birth.metrics.add(name="label", alias=3, datatype=DataType.String, string_value="x")
    birth.metrics.add(name="count", alias=4, datatype=DataType.UInt32, int_value=7)
    seeds.append(birth.SerializeToString())
    data = Payload(timestamp=1_700_000_001_000, seq=1)
    data.metrics.add(alias=1, double_value=21.0)
    data.metrics.add(alias=4, int_value=8)
    data.metrics.add(alias=99, float_value=1.0)
    seeds.append(data.SerializeToString())
    odd = Payload(seq=300)
    odd.metrics.add(name="temp", datatype=DataType.Double, is_null=True)
    odd.metrics.add(name="big", datatype=DataType.UInt64, long_value=2**64 - 1)
    odd.metrics.add(name="when", datatype=DataType.DateTime, long_value=2**63 - 1)
    odd.metrics.add(name="weird", datatype=999, string_value="?")
    seeds.append(odd.SerializeToString())
    death = Payload(timestamp=1)
    death.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=5)
    seeds.append(death.SerializeToString())
    return seeds


def sparkplug(topic: str, payload: bytes) -> None:
    sparkplug_sequence([(topic, payload)])


def sparkplug_sequence(messages: list[tuple[str, bytes]]) -> None:
    from edgeplane_mqtt.decoders import DecodeError
    from edgeplane_mqtt.sparkplug.session import SparkplugSession

    session = SparkplugSession()
    now = 1_700_000_000.0
    for topic, payload in messages:
        now += 1
        try:
            session.handle(topic, payload, now)
        except DecodeError:
            pass
        except Exception as e:  # noqa: BLE001
            raise _escaped("SparkplugSession.handle", (topic, payload), e) from e


# -- Modbus register decoding ---------------------------------------------------------------------

MODBUS_TYPES = ["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]
SUNSPEC_TYPES = ["int16", "uint16", "count", "acc16", "enum16", "bitfield16", "pad", "sunssf", "int32", "uint32",
                 "acc32", "enum32", "bitfield32", "ipaddr", "float32", "int64", "uint64", "acc64", "float64", "string"]


def modbus_registers(type_: str, byte_order: str, word_order: str, bit: int, registers: list[int]) -> None:
    """Any register values a device can send, decoded as any point type: never an exception."""
    from edgeplane_modbus import codec, sunspec

    count = max(1, len(registers)) if type_ == "string" else codec.register_count(type_)
    regs = (registers + [0] * count)[:count]
    try:
        codec.decode(regs, type_, byte_order=byte_order, word_order=word_order, bit=bit)
        fast = codec.make_decoder(type_, byte_order, word_order, bit)
        if fast is not None:
            buf = codec.registers_to_bytes([0xFFFF] + regs, "big", "big")
            fast(buf, 1)
        for sunspec_type in SUNSPEC_TYPES:
            size = len(regs) if sunspec_type == "string" else sunspec.TYPE_SIZE[sunspec_type]
            value = sunspec.decode_value((regs + [0] * size)[:size], sunspec_type)
            if sunspec_type == "sunssf" and value is not None:
                10.0 ** value  # what the connector does with a scale factor: must not overflow
    except Exception as e:  # noqa: BLE001
        raise _escaped(f"modbus decode {type_} {byte_order}/{word_order}", regs, e) from e


def sunspec_device(answers: list[list[int]]) -> None:
    """A device whose answers (registers, possibly fewer or more than asked) come from the fuzzer."""
    from edgeplane_modbus import sunspec

    replies = iter([[0x5375, 0x6E53], *answers])  # past the 'SunS' marker, the chain is hostile

    async def read(address: int, count: int) -> list[int]:
        try:
            return next(replies)
        except StopIteration:
            return [0xFFFF, 0]  # the end marker, as a device that ran out of answers would send

    try:
        asyncio.run(sunspec.discover(read, base=40000))
    except sunspec.SunSpecError:
        pass
    except Exception as e:  # noqa: BLE001
        raise _escaped("sunspec.discover", answers, e) from e
