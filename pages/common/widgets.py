"""Widget values kept across pages for the session (`keep_widgets(keys)` before drawing, `save_widgets(keys)` after)
and in the URL (`restore` on a session's first run, `remember` after the widget), so that a reload or a shared link
opens the same view."""

import streamlit as st

KEPT = "kept_widgets"  # widget values kept across pages: {key: value}


def keep_widgets(keys: list[str]) -> None:
    """Call before the widgets are drawn: these widgets get back the values they had when the page was last left.
    (Streamlit forgets a widget's value once a run of another page does not draw it.) Their values are saved again
    at every run, so a page keeps what was chosen for the whole session."""
    kept = st.session_state.setdefault(KEPT, {})
    for key in keys:
        if key not in st.session_state and key in kept:
            st.session_state[key] = kept[key]


def save_widgets(keys: list[str]) -> None:
    """Call after the widgets are drawn: remember their values for keep_widgets."""
    kept = st.session_state.setdefault(KEPT, {})
    kept.update({key: st.session_state[key] for key in keys if key in st.session_state})


def restore(key: str, param: str, options: list[str]) -> None:
    """A widget's value from the URL on the first run of a session (a reload, a shared link)."""
    if key not in st.session_state and st.query_params.get(param) in options:
        st.session_state[key] = st.query_params[param]


def remember(param: str, value: str | None) -> None:
    """Keep a choice in the URL (removed when it is the default: None)."""
    if value is None:
        st.query_params.pop(param, None)
    elif st.query_params.get(param) != value:
        st.query_params[param] = value
