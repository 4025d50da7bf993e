"""The mtfer app: `streamlit run app.py`. Pages live in pages/; they lay out widgets and call mtfer."""

import streamlit as st

from pages.common.active import active_model_sidebar

st.set_page_config(page_title="mtfer: emotion, gender, race and age from a face", page_icon="🙂", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/predict.py", title="Predict", icon=":material/photo_camera:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
]

# Tells the pages that they run through this navigation (see pages/common/setup.py).
st.session_state["mtfer_app"] = True
page = st.navigation(PAGES)
active_model_sidebar()
page.run()
