"""Predict: upload photos or take one with the camera; every face with all four heads' probabilities. Also a live
camera and a video file: each mode is a module of pages/predict_modes/, and this page picks one."""

import streamlit as st

from mtfer.store import settings
from pages.common.setup import setup_page
from pages.predict_modes import live, photos, video

setup_page(__file__)

st.title("Predict")
st.markdown(
    "Upload a photo (or take one with the camera): for every face in it, the model guesses the emotion shown, "
    "gender, race group and age group, and shows how sure it is of each."
)

choices = settings.model_choices()
if not choices:
    st.error("No trained model was found. Train one on the Train page first.")
    st.stop()
labels = [c.label for c in choices]
with st.sidebar:
    chosen = st.selectbox(
        "Model", labels, key="predict_model", help="The active model is used unless you pick another."
    )
model = choices[labels.index(chosen)]

if st.toggle(
    "Live camera",
    key="predict_live",
    help="Stream your camera: the labels follow each face in real time. Off: photos, or a snapshot from the camera.",
):
    live.live_camera(model)
    st.stop()
st.session_state.pop(live.LIVE_WANTED, None)  # Live switched off: the camera does not start again by itself

if st.toggle(
    "Video file",
    key="predict_video",
    help="Upload a video: each face is followed through it, with its emotion over time. Off: photos.",
):
    video.video_file(model)
    st.stop()

photos.photo_uploads(model)
