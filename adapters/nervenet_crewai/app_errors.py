"""An agent's own failure, raised on the coordinator as plain CrewAI would raise it.

CrewAI already retries a failing LLM call inside the agent (``max_retry_limit``) on the worker;
re-running the whole agent task on top multiplied the model calls (3 attempts x 3 tries), so a
task whose handler raised is not retried by nervenet unless the crew asks (``retry_errors``).
Its exception comes back as text: the type is revived only when it is a builtin exception
(``RuntimeError``, ``ValueError``, ...), looked up in :mod:`builtins`, never imported from the
payload; any other type stays a :class:`~nervenet.RemoteTaskError` naming it.
"""

from __future__ import annotations

import builtins
from typing import NoReturn

from nervenet.errors import DispatchError, RemoteTaskError


def as_raised(exc: RemoteTaskError) -> BaseException:
    """The exception to raise for a worker's ``exc``: the builtin type it had, else ``exc``."""
    module, _, name = exc.error_type.rpartition(".")
    kind = getattr(builtins, name, None) if module == "builtins" else None
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        return exc
    try:
        revived = kind(exc.error_message)
    except Exception:  # a builtin taking other arguments (UnicodeDecodeError)
        return exc
    revived.__cause__ = exc  # the remote traceback and task id stay reachable
    return revived


def raise_as_plain(exc: DispatchError, note: str) -> NoReturn:
    """Raise ``exc`` (or its revived builtin) with ``note`` saying where the run failed."""
    raised = as_raised(exc) if isinstance(exc, RemoteTaskError) else exc
    raised.add_note(note)
    if raised is exc:
        raise exc
    raise raised from exc
