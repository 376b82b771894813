"""The threshold solution: an alarm with hysteresis on any points, and an optional command.

An alarm is raised when a value goes above ``high`` (or below ``low_alarm``), and cleared only
when it comes back past ``clear``, so a value hovering at the limit does not flap. One alarm per
topic until it clears (de-duplication). On alarm it can command a point (e.g. curtail a plant),
and on clear command it back, through the guarded command path.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from edgeplane.bus import Batch, Quality
from edgeplane.components import Context, Solution
from edgeplane.config import ConfigModel, SolutionConfig


class CommandAction(ConfigModel):
    device: str
    point: str
    on_alarm: float | bool | str
    on_clear: float | bool | str | None = None


class ThresholdConfig(SolutionConfig):
    points: list[str] = Field(min_length=1, description="topic patterns to watch, e.g. 'inv*/module_temp'")
    high: float = Field(description="alarm when a value rises above this")
    clear: float | None = Field(None, description="clear when it falls back below this (default: high)")
    severity: Literal["info", "warning", "critical"] = "warning"
    action: CommandAction | None = None

    @model_validator(mode="after")
    def _clear_not_above_high(self) -> ThresholdConfig:
        if self.clear is not None and self.clear > self.high:
            raise ValueError(f"clear ({self.clear}) must not be above high ({self.high}): hysteresis needs clear <= high")
        return self


class ThresholdSolution(Solution[ThresholdConfig]):
    """An alarm with hysteresis per watched topic; see the module docstring."""

    def __init__(self, name: str, config: ThresholdConfig, context: Context):
        super().__init__(name, config, context)
        self.active: dict[str, bool] = {}
        self.alarms = 0

    def subscriptions(self) -> list[str]:
        return list(self.config.points)

    async def on_batch(self, batch: Batch) -> None:
        high = self.config.high
        clear = self.config.clear if self.config.clear is not None else high
        good = batch.quality == Quality.GOOD
        values = batch.values
        if values.dtype.kind != "f" or not good.any():
            return
        above = good & (values > high)
        below = good & (values < clear)
        active = self.active.get(batch.topic, False)
        i = 0
        # jump from one change of state to the next; a batch has few, however long it is
        while i < len(values):
            crossing = below[i:] if active else above[i:]
            if not crossing.any():
                break
            i += int(np.argmax(crossing))
            active = not active
            if active:
                await self._raise(batch.topic, float(batch.ts[i]), float(values[i]))
            else:
                await self._clear(batch.topic, float(batch.ts[i]), float(values[i]))
            i += 1
        self.active[batch.topic] = active

    async def _raise(self, topic: str, ts: float, value: float) -> None:
        self.alarms += 1
        self.log.warning("alarm: %s = %g is above %g", topic, value, self.config.high)
        await self.context.emit(f"alerts/{self.name}", "alarm", {"topic": topic, "value": value, "high": self.config.high, "at": ts},
                                severity=self.config.severity)
        action = self.config.action
        if action is not None:
            await self.context.command(action.device, action.point, action.on_alarm, reason=f"{topic} above {self.config.high:g}")

    async def _clear(self, topic: str, ts: float, value: float) -> None:
        self.log.info("cleared: %s = %g is back below %g", topic, value, self.config.clear if self.config.clear is not None else self.config.high)
        await self.context.emit(f"alerts/{self.name}", "clear", {"topic": topic, "value": value, "at": ts}, severity="info")
        action = self.config.action
        if action is not None and action.on_clear is not None:
            await self.context.command(action.device, action.point, action.on_clear, reason=f"{topic} back to normal")
