"""What the Predict page's modes share: the model's Predictor (loaded once per model, for every session), reading an
environment setting, and the tips shown when no face is found."""

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from mtfer.core import bundles
from mtfer.core.inference import Predictor

NO_FACE_TIPS = """No face was found in this photo. Some tips:

- use a well-lit photo, without strong shadows or back light;
- the face should look roughly towards the camera (not in profile), eyes visible;
- the face should be at least about 40 pixels wide: zoom in or crop a photo of a crowd or a distant person;
- sunglasses, masks or hands over the face make faces hard to find."""


@st.cache_resource(show_spinner="Loading the model ...", max_entries=4)
def load_predictor(path: str, modified: int) -> Predictor:
    """One Predictor per model folder (and version of its files), shared by every session."""
    return Predictor(path)


def modified_ns(path) -> int:
    """When the bundle's files last changed: a replaced model gets a fresh Predictor."""
    files = [path / bundles.MODEL_FILE, path / bundles.METADATA_FILE]
    return max((f.stat().st_mtime_ns for f in files if f.is_file()), default=0)


T = TypeVar("T")


def read_setting(read: Callable[[], T], what: str) -> T | None:
    """An environment setting read by `read`, or None after saying on the page what is wrong with it (`what`)."""
    try:
        return read()
    except ValueError as error:
        st.error(f"{what}: {error}", icon=":material/error:")
        return None


def loaded_predictor(model) -> tuple[Predictor, int] | None:
    """The shared Predictor of `model` and its files' version, or None after saying why it could not be loaded."""
    try:
        modified = modified_ns(model.path)
        return load_predictor(str(model.path), modified), modified
    except (ValueError, OSError) as error:  # runs.RunError is a ValueError
        st.error(f"The model {model.path.name} could not be loaded: {error}")
        return None
