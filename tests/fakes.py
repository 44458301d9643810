"""Stand-ins the tests share for what lies outside Qiji's code."""

from __future__ import annotations

from typing import Any

import grpc


class FailedCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a grpcio stub raises when a call fails with `code`: an RpcError that is also a
    grpc.Call, so code reading `error.code()` meets it as it meets the real one."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__()
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> Any:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False
