"""Resolve ``module:attr`` targets named on the command line (never from a payload)."""

from __future__ import annotations

import importlib
import os
import sys

from .errors import ConfigurationError


def load_target(target: str) -> object:
    """Import ``module:attr`` (``attr`` may be dotted) the way ``uvicorn`` and ``arq`` do.

    The current directory is put on ``sys.path`` first so ``nervenet worker app:graph`` finds
    ``app.py`` where the user runs it.
    """
    module_name, _, attr_path = target.partition(":")
    if not module_name or not attr_path:
        raise ConfigurationError(
            f"{target!r} is not MODULE:ATTR; e.g. `nervenet worker examples.docs:graph`"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"cannot import module {module_name!r} (run from the folder that contains it, "
                "or install it)"
            ) from exc
        raise
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj
