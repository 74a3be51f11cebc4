"""What may be printed or logged: URIs with their credentials replaced by ***."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_uri(uri: str | None) -> str | None:
    """A URI with its password (and a token-only user part) replaced by ***: http://me:***@host."""
    if not uri or "@" not in uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    user = f"{parts.username}:***" if parts.password else "***"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))
