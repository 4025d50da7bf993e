"""What every page does first: `setup_page(__file__)`."""

import streamlit as st


def setup_page(page_file: str) -> None:
    """Run the page (`page_file`: its `__file__`) inside app.py's navigation.

    Opened by its URL before app.py ever ran in this server, Streamlit runs a pages/ file on its own (its pages-folder
    mode), where the other pages and the links to them do not exist. Hand over to app.py's navigation, which then
    shows this same page: calling st.navigation ends the pages-folder mode, and the rerun runs app.py."""
    if not st.session_state.get("mtfer_app"):
        st.session_state["mtfer_app"] = True
        st.navigation([st.Page(lambda: None, url_path="start", default=True), st.Page(page_file)], position="hidden")
        st.rerun()


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
