"""LinkPacer: the uplink's envelope and window limits follow the measured link, within the settings."""

from __future__ import annotations

from edgeplane.sync.pacing import LinkPacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_before_any_acknowledgement_one_small_envelope():
    pacer = LinkPacer(keepalive=30, max_envelope_bytes=256_000)
    assert pacer.rate is None
    assert 1_000 <= pacer.envelope_body_limit() <= 8_000
    assert pacer.window_bytes() == 8_000


def test_a_slow_link_gives_envelopes_that_cross_within_a_quarter_keepalive():
    clock = FakeTime()
    pacer = LinkPacer(keepalive=20, max_envelope_bytes=256_000, clock=clock)
    for _ in range(20):  # 4 kB envelopes over a 1 kB/s link, compressed 2:1
        pacer.sent(4_000, 8_000)
        clock.now += 4.0
        pacer.acknowledged(4_000)
    assert abs(pacer.rate - 1_000) < 1
    assert abs(pacer.wire_per_body - 0.5) < 0.01
    assert pacer.window_bytes() == 1_000 * 20 / 2
    assert abs(pacer.envelope_body_limit() - 1_000 * 20 / 4 / 0.5) < 100  # 5 kB on the wire


def test_a_burst_of_small_envelopes_does_not_pass_for_a_fast_link():
    clock = FakeTime()
    pacer = LinkPacer(keepalive=10, max_envelope_bytes=256_000, clock=clock)
    pacer.sent(200, 200)
    clock.now += 0.001  # a link buffer swallowed it: 200 kB/s for one sample
    pacer.acknowledged(200)
    pacer.sent(8_000, 8_000)
    clock.now += 8.0  # the real rate: 1 kB/s
    pacer.acknowledged(8_000)
    assert pacer.rate < 1_100


def test_a_fast_link_opens_to_the_settings_and_never_beyond():
    clock = FakeTime()
    pacer = LinkPacer(keepalive=30, max_envelope_bytes=100_000, clock=clock)
    for _ in range(40):
        size = pacer.envelope_body_limit()
        pacer.sent(size, size)
        clock.now += 0.001
        pacer.acknowledged(size)
    assert pacer.envelope_body_limit() == 100_000
    assert pacer.window_bytes() > 1_000_000


async def test_the_window_halves_once_per_drop_down_to_one_small_envelope():
    pacer = LinkPacer(keepalive=30, max_envelope_bytes=256_000)
    for _ in range(4):  # one drop takes four envelopes along: one halving
        pacer.sent(2_000, 2_000)
    for _ in range(4):
        pacer.lost(2_000)
    pacer.dropped()
    assert pacer.window_bytes() == 4_000
    for _ in range(10):
        pacer.sent(8_000, 8_000)
        pacer.lost(8_000)
        pacer.dropped()
    assert pacer.window_bytes() == 1_000
    assert pacer.envelope_body_limit() == 1_000
    assert pacer.in_flight == 0
    await pacer.wait_for_room()  # nothing in flight: one envelope may always go


def test_the_largest_envelope_a_site_may_configure_is_one_the_cloud_accepts():
    import pytest
    from pydantic import ValidationError

    from edgeplane.sync.codec import MAX_ENVELOPE_BYTES
    from edgeplane.sync.config import UplinkConfig

    bounds = [m.le for m in UplinkConfig.model_fields["max_envelope_bytes"].metadata if hasattr(m, "le")]
    assert bounds == [MAX_ENVELOPE_BYTES]
    with pytest.raises(ValidationError, match="max_envelope_bytes"):
        UplinkConfig(url="mqtt://broker:1883", max_envelope_bytes=MAX_ENVELOPE_BYTES + 1)
