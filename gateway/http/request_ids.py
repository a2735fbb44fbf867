"""Request ids: the client's X-Request-ID when it is sane, otherwise a cheap unique one."""

from __future__ import annotations

import os
import re
from itertools import count
from typing import Final

_SANE: Final = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestIds:
    """``<random process prefix>-<counter>``: unique across processes, no syscall per request."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = count(1)

    def make(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"

    def accept_or_make(self, client_value: bytes | None) -> str:
        if client_value is not None and _SANE.fullmatch(client_value):
            return client_value.decode()
        return self.make()
