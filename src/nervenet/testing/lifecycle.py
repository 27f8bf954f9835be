"""The ``with`` protocol of the private servers: started on entry, removed on exit."""

from __future__ import annotations

from typing import Self


class Started:
    """``with Server() as server``: :meth:`start` on entry (and :meth:`close` if it fails, so a
    server that never came up leaves no process or directory behind), :meth:`close` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
