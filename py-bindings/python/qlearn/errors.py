"""Exceptions of :class:`qlearn.Client`: one class per kind of error answer
of the service, all under :class:`QlearnError`, each carrying the error
``code``, the HTTP ``status``, the ``field`` a 422 names and the
``retry_after`` seconds a 429/503 gives. Messages are the server's (which
never contain credentials).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Optional

from .types import parse_time


class QlearnError(Exception):
    """An error answer of the qlearn service (or no answer at all: status 0)."""

    def __init__(self, message: str, *, code: str = "", status: int = 0,
                 field: Optional[str] = None, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.field = field
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class BadRequest(QlearnError):
    """400 ``malformed_json`` (and other 4xx without a class of their own)."""


class Unauthorized(QlearnError):
    """401 ``unauthorized`` (missing, bad, expired or revoked credentials) or
    ``invalid_credentials`` (wrong email or password)."""


class Forbidden(QlearnError):
    """403 ``forbidden``."""


class ModelLimitReached(Forbidden):
    """403 ``model_limit_reached``: the tier's model limit."""


class NotFound(QlearnError):
    """404 ``not_found``: unknown id, another tenant's resource, unknown route."""


class Conflict(QlearnError):
    """409 ``conflict`` or ``email_taken``."""


class PayloadTooLarge(QlearnError):
    """413 ``payload_too_large``."""


class ValidationError(QlearnError):
    """422 (``invalid_field``, ``invalid_state``, ``invalid_action``,
    ``invalid_model``): ``field`` names the offending field, e.g.
    ``experiences[3].reward``, when the message does."""


class TooManyRequests(QlearnError):
    """429: ``retry_after`` says how long to wait."""


class RateLimited(TooManyRequests):
    """429 ``rate_limited`` (the per-user token bucket) or
    ``too_many_attempts`` (login/registration throttle)."""


class QuotaExceeded(TooManyRequests):
    """429 ``quota_exceeded``: the monthly quota is used up until
    :attr:`resets_at` (00:00 UTC on the 1st of next month)."""

    @property
    def resets_at(self) -> Optional[_dt.datetime]:
        """When the quota resets (from the message, else from Retry-After)."""
        m = re.search(r"resets (\S+Z)", self.message)
        if m:
            return parse_time(m.group(1))
        if self.retry_after is not None:
            return _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=self.retry_after)
        return None


class ServiceUnavailable(QlearnError):
    """503 ``storage_unavailable`` / ``unavailable``: the server's fault, retry later."""


class ConnectionFailed(QlearnError):
    """The server could not be reached or did not answer in time (status 0)."""


_BY_CODE: dict[str, type[QlearnError]] = {
    "quota_exceeded": QuotaExceeded,
    "rate_limited": RateLimited,
    "too_many_attempts": RateLimited,
    "model_limit_reached": ModelLimitReached,
    "email_taken": Conflict,
}
_BY_STATUS: dict[int, type[QlearnError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: ValidationError, 429: TooManyRequests, 503: ServiceUnavailable,
}
_FIELD = re.compile(r"^invalid ([A-Za-z_][\w.\[\]]*): ")


def error_for(status: int, code: str, message: str, retry_after: Optional[float]) -> QlearnError:
    """The exception for an error answer."""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else QlearnError
    m = _FIELD.match(message) if status == 422 else None
    return cls(message, code=code, status=status, field=m.group(1) if m else None,
               retry_after=retry_after)
