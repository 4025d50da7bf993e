"""The sidebar of every page: which model answers (the active one) and, when it is not the shipped one, the way
back to it."""

from pathlib import Path

import streamlit as st

from mtfer.app import cards
from mtfer.core import bundles
from mtfer.store import settings
from pages.common.operator import operator_access


@st.cache_data(ttl=60, show_spinner=False)
def model_title(path: str, modified: int) -> str:
    """The model's title for people, from its metadata (`modified` keys the cache to the file's version)."""
    try:
        return cards.model_title(bundles.read_json(Path(path) / bundles.METADATA_FILE))
    except (OSError, ValueError):
        return Path(path).name


def back_to_shipped() -> None:
    if operator_access(note=False).allowed:
        bundles.clear_active_model(bundles.default_runs_dir())


def active_model_sidebar() -> None:
    """ "Active model: <title>" and, for a trained run, "Back to the shipped model" (for everyone using the app)."""
    active = settings.active_model(bundles.default_runs_dir())
    metadata = active.path / bundles.METADATA_FILE
    modified = metadata.stat().st_mtime_ns if metadata.exists() else 0
    with st.sidebar:
        st.caption("Active model: Predict, Evaluate and the command line use it")
        where = "the shipped model" if active.shipped else f"run {active.path.name}"
        st.markdown(f"**{model_title(str(active.path), modified)}** ({where})")
        if not active.shipped:
            st.button(
                "Back to the shipped model",
                key="active_back_to_shipped",
                icon=":material/undo:",
                on_click=back_to_shipped,
                disabled=not operator_access(note=False).allowed,
                help="Makes the shipped model the active one again, for everyone using this app. The run is kept.",
            )
