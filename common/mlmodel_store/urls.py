"""Database URLs: the embedded SQLite default, and redaction so a password never reaches a log."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import SecretStr

SQLITE_FILE_NAME = "metadata.sqlite3"
REDACTED = "***"


def default_cache_dir() -> Path:
    """Where artifacts and, without a database URL, the SQLite file go."""
    return Path.home() / ".cache" / "mlmodel"


def default_sqlite_url(cache_dir: Path) -> str:
    return "sqlite:///" + str(Path(cache_dir).expanduser() / SQLITE_FILE_NAME)


def resolve_database_url(url: SecretStr | str | None, cache_dir: Path) -> str:
    """The configured URL, or the SQLite file in the cache dir when none is configured."""
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    url = (url or "").strip()
    return url or default_sqlite_url(cache_dir)


def url_scheme(url: str) -> str:
    return url.split(":", 1)[0].lower()


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's convention)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(
            "SQLite URLs look like sqlite:///relative/path or sqlite:////absolute/path"
        )
    return Path(url[len("sqlite:///") :])


def url_password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
    if password:
        return password
    # key=value DSNs (libpq style) are accepted by psycopg2 as well.
    match = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url)
    return match.group(1).strip("'") if match else None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (user, host, port and database kept)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{parts.username or ''}:{REDACTED}@{host}"
            if parts.port:
                netloc += f":{parts.port}"
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", rf"\1{REDACTED}", url)


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from any text (error messages quote DSNs now and then)."""
    password = url_password(url)
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, REDACTED)
    return text
