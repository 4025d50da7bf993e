"""The operator gate of the pages that change shared state (mtfer.store.operator): `allowed = operator_access()`."""

import streamlit as st

from mtfer.store import operator

PASSWORD_KEY = "operator_password"


def operator_access(note: bool = True) -> operator.Access:
    """This session's access. On a server other machines can reach: a password box in the sidebar when a password
    is set, and (with `note`) a line on the page saying why changes are off."""
    result = operator.access(st.get_option("server.address"), st.session_state.get(PASSWORD_KEY))
    if result.ask:
        st.sidebar.text_input("Operator password", type="password", key=PASSWORD_KEY)
    if note and not result.allowed:
        st.info(result.why, icon=":material/lock:")
    return result
