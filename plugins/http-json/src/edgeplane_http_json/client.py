"""Fetching every page of one poll: auth, pagination, rate limit, Retry-After."""

from __future__ import annotations

import base64
import email.utils
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urljoin

import aiohttp

from edgeplane.errors import ConnectorError
from edgeplane.ratelimit import TokenBucket

from edgeplane_http_json.config import ApiKeyAuth, BasicAuth, BearerAuth, CursorPagination, HttpJsonConfig, LinkPagination, PagePagination
from edgeplane_http_json.jsonpath import MISSING, extract

__all__ = ["AuthRefused", "HttpJsonError", "PageFetcher", "retry_after_seconds"]


class HttpJsonError(ConnectorError):
    """A poll failed. ``reason`` is a short metric label (http_500, timeout, not_json, ...)."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class AuthRefused(HttpJsonError):
    """The API refused the credentials (401/403): retrying will not help until auth is fixed."""


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (a number, or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass
class Page:
    document: Any
    next_link: str | None


class PageFetcher:
    """Fetches the pages of one poll of a device; one per connector object."""

    def __init__(self, device: str, config: HttpJsonConfig, session: aiohttp.ClientSession, clock: Any,
                 limiter: TokenBucket | None, on_response: Callable[[int], None],
                 sleep: Callable[[float], Awaitable[None]] | None = None):
        self.device = device
        self.config = config
        self.session = session
        self.clock = clock
        self.limiter = limiter
        self.on_response = on_response
        self.sleep = sleep or clock.sleep

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.config.headers}
        auth = self.config.auth
        if isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        elif isinstance(auth, BasicAuth):
            pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif isinstance(auth, ApiKeyAuth) and auth.location == "header":
            headers[auth.name] = auth.value.get_secret_value()
        return headers

    def _base_params(self) -> dict[str, str]:
        params = dict(self.config.params)
        auth = self.config.auth
        if isinstance(auth, ApiKeyAuth) and auth.location == "query":
            params[auth.name] = auth.value.get_secret_value()
        return params

    async def _get(self, url: str, params: dict[str, str] | None) -> Page:
        attempts = 0
        while True:
            if self.limiter is not None:
                await self.limiter.acquire()
            try:
                async with self.session.get(url, params=params, headers=self._headers(),
                                            timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as response:
                    self.on_response(response.status)
                    if response.status in (401, 403):
                        raise AuthRefused(f"http_{response.status}",
                                          f"device {self.device!r}: {self.config.url} refused the credentials (HTTP "
                                          f"{response.status}): check devices.{self.device}.auth")
                    if response.status in (429, 503):
                        wait = retry_after_seconds(response.headers.get("Retry-After"), time.time())
                        attempts += 1
                        wait = wait if wait is not None else min(60.0, 2.0 ** attempts)
                        if attempts > 3 or wait > self.config.max_retry_after:
                            raise HttpJsonError(f"http_{response.status}", f"device {self.device!r}: {url} keeps answering "
                                                f"HTTP {response.status} (asked to wait {wait:.0f} s): lower rate_limit or poll")
                        if self.limiter is not None:
                            self.limiter.pause(wait)
                        else:
                            await self.sleep(wait)
                        continue
                    if response.status >= 400:
                        text = (await response.text())[:200]
                        raise HttpJsonError(f"http_{response.status}", f"device {self.device!r}: {url} answered HTTP "
                                            f"{response.status}: {text!r}")
                    try:
                        document = await response.json(content_type=None)
                    except ValueError as e:
                        raise HttpJsonError("not_json", f"device {self.device!r}: {url} did not answer JSON: {e}") from None
                    link = response.links.get("next")
                    next_link = str(link["url"]) if link else None
                    return Page(document, next_link)
            except TimeoutError:
                raise HttpJsonError("timeout", f"device {self.device!r}: {url} did not answer within "
                                               f"{self.config.timeout:g} s") from None
            except aiohttp.ClientError as e:
                raise HttpJsonError("connection", f"device {self.device!r}: {url}: {e}") from None

    async def fetch(self) -> list[Any]:
        """The decoded pages of one poll, first to last."""
        pagination = self.config.pagination
        params = self._base_params()
        url = self.config.url
        pages: list[Any] = []
        if isinstance(pagination, PagePagination):
            for number in range(pagination.start, pagination.start + pagination.max_pages):
                page_params = {**params, pagination.param: str(number)}
                if pagination.size_param and pagination.size:
                    page_params[pagination.size_param] = str(pagination.size)
                page = await self._get(url, page_params)
                pages.append(page.document)
                records = extract(page.document, self.config.records)
                count = len(records) if isinstance(records, list) else 0
                if count == 0 or (pagination.size is not None and count < pagination.size):
                    break
        elif isinstance(pagination, CursorPagination):
            cursor: Any = None
            for _ in range(pagination.max_pages):
                page = await self._get(url, {**params, pagination.param: str(cursor)} if cursor else params)
                pages.append(page.document)
                cursor = extract(page.document, pagination.cursor_field)
                if cursor in (None, "", MISSING):
                    break
        elif isinstance(pagination, LinkPagination):
            next_url: str | None = url
            first = True
            for _ in range(pagination.max_pages):
                page = await self._get(next_url, params if first else None)  # a next link carries its own query
                first = False
                pages.append(page.document)
                link = extract(page.document, pagination.next_field) if pagination.next_field else page.next_link
                if link in (None, "", MISSING):
                    break
                next_url = urljoin(next_url, str(link))
        else:
            pages.append((await self._get(url, params)).document)
        return pages
