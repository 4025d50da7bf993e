"""Widget values kept across pages for the session: `keep_widgets(keys)` before drawing, `save_widgets(keys)` after."""

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
