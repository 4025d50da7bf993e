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
