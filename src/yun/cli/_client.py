"""The CLI's side of the HTTP admin API: which server, which key, and errors as one line.

The server and key come from YUN_URL / YUN_API_KEY (through settings.py), else from the file `yun
login` wrote (mode 0600 in the XDG config dir, as gh and kubectl keep theirs), else the URL defaults
to http://127.0.0.1:8000 and the key is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from yun.cli._common import CliError, settings_for
from yun.settings import DEFAULT_URL, Settings

__all__ = ["AdminClient", "Login", "connect", "forget_login", "path", "read_login", "save_login"]

_LOGIN_HINT = "log in with `yun login URL` (or set YUN_URL and YUN_API_KEY)"
_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def path(*parts: str) -> str:
    """A URL path from parts, each escaped (ids and names may hold any character)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


@dataclass(frozen=True)
class Login:
    url: str
    api_key: str | None


def _login_file(settings: Settings) -> Path:
    return settings.config_dir / "login.json"


def read_login(settings: Settings) -> Login | None:
    found = _login_file(settings)
    try:
        data = json.loads(found.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {found}: {exc}; run `yun logout` and log in again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise CliError(f"{found} is not a yun login file; run `yun logout` and log in again")
    key = data.get("api_key")
    return Login(data["url"], key if isinstance(key, str) else None)


def save_login(settings: Settings, login: Login) -> Path:
    """Write the login file readable by its owner only (it holds a platform-admin key)."""
    target = _login_file(settings)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"url": login.url, "api_key": login.api_key}, fh)
        os.chmod(partial, 0o600)  # whatever the umask or an older file said
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def forget_login(settings: Settings) -> Login | None:
    found = read_login(settings)
    _login_file(settings).unlink(missing_ok=True)
    return found


class AdminClient:
    """A platform-admin session with one Yun server. Every failure becomes a CliError with one line."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=_TIMEOUT)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(
        self, method: str, url: str, *, params: dict[str, Any] | None = None, json: Any = None, timeout: float = 60.0
    ) -> httpx.Response:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        with self._errors(timeout):
            r = self._http.request(method, url, params=params, json=json, timeout=httpx.Timeout(timeout, connect=5.0))
        if r.status_code >= 400:
            raise CliError(_error_line(r))
        return r

    def upload(self, url: str, *, files: dict[str, Any], data: dict[str, str], timeout: float = 600.0) -> Any:
        """A multipart POST; file objects in `files` are read and sent a chunk at a time."""
        with self._errors(timeout):
            r = self._http.post(url, files=files, data=data, timeout=httpx.Timeout(timeout, connect=5.0))
        if r.status_code >= 400:
            raise CliError(_error_line(r))
        return r.json()

    def download(self, url: str, write: Callable[[bytes], object], timeout: float = 600.0) -> None:
        """GET `url` and hand its body to `write` as it arrives."""
        with self._errors(timeout), self._http.stream("GET", url, timeout=httpx.Timeout(timeout, connect=5.0)) as r:
            if r.status_code >= 400:
                r.read()
                raise CliError(_error_line(r))
            for chunk in r.iter_bytes():
                write(chunk)

    @contextlib.contextmanager
    def _errors(self, timeout: float) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach Yun at {self.url} ({_reason(exc)}): is `yun serve` running there? "
                f"To use another server, {_LOGIN_HINT}."
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"Yun at {self.url} did not answer within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"talking to Yun at {self.url}: {_reason(exc)}") from exc

    def get(self, url: str, **params: Any) -> Any:
        return self.request("GET", url, params=params).json()

    def post(self, url: str, body: Any, timeout: float = 60.0) -> Any:
        return self.request("POST", url, json=body, timeout=timeout).json()

    def put(self, url: str, body: Any) -> Any:
        return self.request("PUT", url, json=body).json()

    def patch(self, url: str, body: Any) -> Any:
        return self.request("PATCH", url, json=body).json()

    def delete(self, url: str) -> Any:
        return self.request("DELETE", url).json()


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


def _error_line(r: httpx.Response) -> str:
    """The server's OpenAI-shaped message, with what to do about a bad key."""
    try:
        error = r.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = r.text.strip().splitlines()[0][:300] if r.text.strip() else r.reason_phrase
    if r.status_code == 401:
        message += f" The yun CLI needs a platform-admin key: {_LOGIN_HINT}."
    elif r.status_code == 403:
        message += f" Use a platform-admin key: {_LOGIN_HINT}."
    return f"{message} (HTTP {r.status_code})"


def connect() -> AdminClient:
    """A client for the server this CLI is pointed at (environment, then `yun login`, then the default)."""
    settings = settings_for()
    saved = read_login(settings)
    url = settings.url or (saved.url if saved else DEFAULT_URL)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if key is None and saved is not None and saved.url == url:
        key = saved.api_key
    if key is None:
        raise CliError(f"no API key for {url}: {_LOGIN_HINT}")
    return AdminClient(url, key)
