"""One JSON Schema for site files, with every installed plugin's device, solution and transport sections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, create_model

from edgeplane.config.base import DeviceConfig, SolutionConfig
from edgeplane.config.sections import CoreSite
from edgeplane.sync.config import SyncConfig, UplinkConfig

if TYPE_CHECKING:
    from edgeplane.plugins import Registry

__all__ = ["site_json_schema"]


def site_json_schema(registry: Registry) -> dict[str, Any]:
    """One JSON Schema for site files, with every installed plugin's device and solution sections."""

    def union(models: list[type[BaseModel]], discriminator: str, fallback: type[BaseModel]) -> Any:
        if not models:
            return fallback
        if len(models) == 1:
            return models[0]
        return Annotated[Union[tuple(models)], Field(discriminator=discriminator)]  # noqa: UP007 - X | Y cannot take a tuple made at run time

    device_union = union([registry.device_model(k) for k in sorted(registry.connectors)], "connector", DeviceConfig)
    solution_union = union([registry.solution_model(k) for k in sorted(registry.solutions)], "type", SolutionConfig)
    # sync.uplink: the settings of any registered transport (each validates its own)
    uplink_models = list(dict.fromkeys(getattr(t, "Config", UplinkConfig) for t in registry.transports.values()))
    # a union built at run time: a type form to pydantic, a value to mypy
    uplink_union: Any = (uplink_models or [UplinkConfig])[0]
    if len(uplink_models) > 1:
        uplink_union = Union[tuple(uplink_models)]  # noqa: UP007 - X | Y cannot take a tuple made at run time
    sync_model = create_model("SyncSection", __base__=SyncConfig, uplink=(uplink_union, ...))
    schema_model = create_model(
        "EdgeplaneSite",
        __base__=CoreSite,
        devices=(dict[str, device_union], Field(default_factory=dict)),  # type: ignore[valid-type]  # a union made at run time
        solutions=(dict[str, solution_union], Field(default_factory=dict)),  # type: ignore[valid-type]  # likewise
        sync=(sync_model | None, Field(None, description="cloud sync: uplink policy, outbox, signed downlink; off when absent")),
    )
    schema = schema_model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgeplane site file"
    return schema
