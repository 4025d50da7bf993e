"""Who may change what everyone shares (train, stop and resume jobs, evaluate now, choose the model Predict uses):
anyone on a private server, only the operator on one that other machines can reach. Pure functions, no Streamlit.

The app listens on 127.0.0.1 by default (.streamlit/config.toml), where only this machine's own users reach it.
Opened to a network (`--server.address 0.0.0.0`), anyone who reaches the port could start a thousand-epoch job or
swap the model for everyone: there these actions need the password in $MTFER_OPERATOR_PASSWORD, and without one
set the app is read-only (predictions and evaluations can still be viewed)."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_OPERATOR_PASSWORD = "MTFER_OPERATOR_PASSWORD"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_private(address: str | None) -> bool:
    """Whether a server listening on `address` (Streamlit's server.address) is reachable from this machine only.
    No address means every interface: not private."""
    return (address or "").strip().lower() in LOOPBACK


@dataclass(frozen=True)
class Access:
    """What a session may do: `allowed` to change shared state, `ask` for a password, and `why` in a sentence."""

    allowed: bool
    ask: bool
    why: str


def access(address: str | None, given: str | None, env: Mapping[str, str] | None = None) -> Access:
    """The session's access on a server listening on `address`, with the password it `given` (None: none)."""
    if is_private(address):
        return Access(True, False, "")
    expected = (os.environ if env is None else env).get(ENV_OPERATOR_PASSWORD, "")
    if not expected:
        return Access(
            False,
            False,
            "This app can be reached from other machines, so it is read-only: training, evaluating and choosing the "
            f"model are off. The person running it can set {ENV_OPERATOR_PASSWORD} to allow them with a password.",
        )
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        return Access(True, True, "")
    return Access(
        False,
        True,
        "This app can be reached from other machines: training, evaluating and choosing the model need the operator "
        "password (in the sidebar).",
    )
