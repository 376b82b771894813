"""What an ``http_json`` device entry and its points may hold in a site file.

::

    devices:
      logger1:
        connector: http_json
        url: https://logger.example/api/v1/readings
        poll: 1min
        auth: {type: bearer, token: "${env:LOGGER_TOKEN}"}
        pagination: {type: page, param: page, size_param: per_page, size: 500, max_pages: 20}
        rate_limit: 30/min
        tls: {ca: certs/logger-ca.pem}  # optional: edgeplane.config.TlsSettings (ca, cert, key, verify)
        records: data                  # where the list of records is in each page
        timestamp: ts                  # each record's time field (ISO 8601 or epoch seconds/ms)
        points:
          irradiance: {field: poa_irradiance, unit: W/m2}
          module_temp: {field: sensors.module_temp, unit: degC}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edgeplane import DeviceConfig, Duration, PointSpec, Rate
from edgeplane.config import TlsSettings

__all__ = ["Auth", "HttpJsonConfig", "HttpJsonPoint", "Pagination"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoAuth(_Part):
    type: Literal["none"] = "none"


class BearerAuth(_Part):
    type: Literal["bearer"]
    token: SecretStr = Field(description="the token; write it as ${env:NAME} or ${file:PATH}")


class BasicAuth(_Part):
    type: Literal["basic"]
    username: str = Field(description="user name")
    password: SecretStr = Field(description="password; write it as ${env:NAME} or ${file:PATH}")


class ApiKeyAuth(_Part):
    type: Literal["api_key"]
    name: str = Field(description="the header or query parameter that carries the key, e.g. X-API-Key or appid")
    value: SecretStr = Field(description="the key; write it as ${env:NAME} or ${file:PATH}")
    location: Literal["header", "query"] = Field("header", description="send the key as a header or a query parameter")


Auth = Annotated[Union[NoAuth, BearerAuth, BasicAuth, ApiKeyAuth], Field(discriminator="type")]


class NoPagination(_Part):
    type: Literal["none"] = "none"


class PagePagination(_Part):
    """Numbered pages: ``?page=1&per_page=500``, until a page is short or empty, or ``max_pages``."""

    type: Literal["page"]
    param: str = Field("page", description="query parameter of the page number")
    start: int = Field(1, ge=0, description="number of the first page")
    size_param: str | None = Field(None, description="query parameter of the page size, if the API takes one")
    size: int | None = Field(None, ge=1, description="records per page; a shorter page is the last")
    max_pages: int = Field(50, ge=1, description="stop after this many pages in one poll")


class CursorPagination(_Part):
    """An opaque cursor: each page names the next one (``"next_cursor": "abc"``), null on the last."""

    type: Literal["cursor"]
    param: str = Field("cursor", description="query parameter that sends the cursor back")
    cursor_field: str = Field("next_cursor", description="dotted path of the next cursor in each page")
    max_pages: int = Field(50, ge=1, description="stop after this many pages in one poll")


class LinkPagination(_Part):
    """A next-page URL: the ``Link: <...>; rel="next"`` header, or a field of the page (``links.next``)."""

    type: Literal["link"]
    next_field: str | None = Field(None, description="dotted path of the next URL in the page; default: the Link header")
    max_pages: int = Field(50, ge=1, description="stop after this many pages in one poll")


Pagination = Annotated[Union[NoPagination, PagePagination, CursorPagination, LinkPagination], Field(discriminator="type")]


class HttpJsonPoint(PointSpec):
    """One value in each record: a dotted path (``main.temp``, ``values.0``)."""

    field: str = Field(description="dotted path of the value in a record, e.g. 'main.temp' or 'channels.3.value'")

    @model_validator(mode="after")
    def _read_only(self) -> HttpJsonPoint:
        if self.access != "r":
            raise ValueError(f"http_json points are read-only (access {self.access!r}): set access: r")
        return self


class HttpJsonConfig(DeviceConfig):
    """A JSON API polled over HTTP(S)."""

    renamed_fields: ClassVar[dict[str, str]] = {"verify_tls": "tls.verify"}

    url: str = Field(description="the endpoint, http(s)://host[:port]/path[?query]")
    params: dict[str, str] = Field(default_factory=dict, description="query parameters sent with every request")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    auth: Auth = Field(default_factory=NoAuth, description="none, bearer, basic or api_key")
    pagination: Pagination = Field(default_factory=NoPagination, description="none, page, cursor or link")
    records: str | None = Field(None, description="dotted path of the list of records in a page; none: the page is one record")
    timestamp: str | None = Field(None, description="dotted path of a record's time; none: the time of the poll")
    timestamp_format: Literal["auto", "iso", "epoch_s", "epoch_ms"] = Field(
        "auto", description="how the time is written; auto: ISO 8601 text, or a number (ms if above 1e11)")
    poll: Duration | None = Field(60.0, description="polling period")
    timeout: Duration = Field(10.0, description="how long one request may take")
    rate_limit: Rate | None = Field(None, description="most requests per second to this API, e.g. '30/min'; pages count")
    max_retry_after: Duration = Field(300.0, description="longest Retry-After (429/503) honoured before giving up this poll")
    tls: TlsSettings | None = Field(
        None, description="https: which CA to trust, a client certificate, verify: false for a lab device; default: the system's CAs")
    points: dict[str, HttpJsonPoint] = Field(default_factory=dict, description="points, added to the profile's")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an HTTP URL: write http://host/path or https://host/path")
        return value
