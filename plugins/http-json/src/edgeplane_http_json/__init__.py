"""HTTP/JSON polling connector for edgeplane (``connector: http_json``).

Polls a JSON API (a data logger's export, a weather service), follows its pagination, keeps to
its rate limit, and publishes each point's new readings with the records' own time stamps.
"""

from edgeplane_http_json.config import HttpJsonConfig, HttpJsonPoint
from edgeplane_http_json.connector import HttpJsonConnector

__all__ = ["HttpJsonConfig", "HttpJsonConnector", "HttpJsonPoint"]
