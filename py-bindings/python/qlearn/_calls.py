"""What a call to the service is, written once for both clients: a
:class:`_Call` (one HTTP request and how to read its answer), a plan (a
generator of calls, for operations that take several), the
:class:`_endpoint` decorator that turns a call builder into a method of
:class:`qlearn.Client` (returns the result) and :class:`qlearn.AsyncClient`
(returns an awaitable of it), and the reading of error answers."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar, Union, overload

from .errors import QlearnError, error_for
from .types import from_json

if TYPE_CHECKING:
    from .client import AsyncClient, Client

T = TypeVar("T")

_EXTRA = "pip install 'qlearn[client]'"


def _require_httpx() -> Any:
    try:
        import httpx
    except ImportError as e:
        raise ImportError(f"qlearn.Client and qlearn.AsyncClient need httpx: {_EXTRA}") from e
    return httpx


@dataclass
class _Call(Generic[T]):
    """One HTTP request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Optional[dict[str, Any]] = None
    content: Optional[bytes] = None
    content_type: Optional[str] = None
    #: Safe to send twice: retried after a 429 rate_limited or a 503.
    idempotent: bool = True
    auth: bool = True
    #: Called with the parsed result (e.g. to keep a new token).
    then: Optional[Callable[[T], None]] = field(default=None, repr=False)


#: An operation of several calls: yields calls, receives their results,
#: returns its own.
_Plan = Generator[_Call[Any], Any, T]
_Op = Union[_Call[T], _Plan[T]]


class _endpoint(Generic[T]):
    """A method written once for both clients: the decorated function returns
    a call (or a plan of calls); on a :class:`Client` the method returns the
    result, on an :class:`AsyncClient` an awaitable of it."""

    def __init__(self, build: Callable[..., _Op[T]]) -> None:
        #: The call (or plan) builder, for reuse by other endpoints.
        self.build: Callable[..., Any] = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]
        # help() shows what the method returns, not the call it builds.
        ret = re.fullmatch(r"_(?:Call|Plan)\[(.*)\]", str(build.__annotations__.get("return", "")))
        self._result = ret.group(1) if ret else "Any"
        self._signature = inspect.signature(build)
        self.__signature__ = self._signature.replace(return_annotation=self._result)

    if TYPE_CHECKING:
        @overload
        def __get__(self, obj: None, owner: Any = None) -> Any: ...
        @overload
        def __get__(self, obj: Client, owner: Any = None) -> Callable[..., T]: ...
        @overload
        def __get__(self, obj: AsyncClient, owner: Any = None) -> Callable[..., Awaitable[T]]: ...
        @overload
        def __get__(self, obj: Any, owner: Any = None) -> Callable[..., Any]: ...

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        build = self.build
        if obj is None:  # the class attribute: a plain function for help()
            @functools.wraps(build)
            def unbound(self: Any, *args: Any, **kwargs: Any) -> Any:
                return self._execute(build(self, *args, **kwargs))

            unbound.__signature__ = self.__signature__  # type: ignore[attr-defined]
            unbound.build = build  # type: ignore[attr-defined]
            return unbound

        @functools.wraps(build)
        def bound(*args: Any, **kwargs: Any) -> Any:
            return obj._execute(build(obj, *args, **kwargs))

        target = getattr(obj, "client", obj)  # a RemoteModel sends through its client
        is_async = inspect.iscoroutinefunction(getattr(target, "_send", None))
        params = list(self._signature.parameters.values())[1:]
        bound.__signature__ = self._signature.replace(  # type: ignore[attr-defined]
            parameters=params, return_annotation=f"Awaitable[{self._result}]" if is_async else self._result)
        return bound


def _json(cls: type[T]) -> Callable[[Any], T]:
    return lambda r: from_json(cls, r.json())


def _nothing(_r: Any) -> None:
    return None


def _code(r: Any) -> str:
    try:
        return str(r.json()["error"]["code"])
    except Exception:
        return ""


def _retry_after(r: Any) -> Optional[float]:
    try:
        return max(0.0, float(r.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _error(r: Any) -> QlearnError:
    try:
        err = r.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except Exception:
        code, message = "", f"HTTP {r.status_code}"
    return error_for(r.status_code, code, message, _retry_after(r))
