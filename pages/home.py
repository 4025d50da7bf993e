"""Home: what the app does in plain words, the model in use, where to go next."""

import streamlit as st

from mtfer.app import cards, wording
from mtfer.core import bundles
from mtfer.store import settings
from pages.common.cards import show_accuracy_cards
from pages.common.setup import setup_page

setup_page(__file__)

st.title("Reading faces: emotion, gender, race and age")
st.markdown(
    """
This app looks at a photo, finds every face in it, and makes four guesses about each face at once:

- the **emotion** it shows: surprise, fear, disgust, happiness, sadness, anger or neutral;
- **gender**, a **race group** and an **age group**, in the coarse categories of the public data sets it learned from.

One small neural network makes all four guesses together. The idea comes from a research paper
(Saroop et al., 2021), which found that learning gender, race and age alongside emotion helps a network read
emotions. Here no public data set has all four labels: trained on them as they are, the network reads emotions no
better than one trained on emotions alone; when a first model fills in the missing labels, it reads them a
little better (1 to 2 points of emotion accuracy in short trial runs, on faces held back from training).
It sees each face as a small 50 x 50 grayscale picture, turned so the eyes are level.

These are **guesses, not facts**. The categories are simplifications, and the model makes mistakes, most of all
on faces unlike the ones it was trained on. The Evaluate page shows where it goes wrong, and for whom.
"""
)

st.subheader("The model in use")
path = bundles.resolve_model(None)
try:
    metadata = bundles.read_json(path / bundles.METADATA_FILE) if settings.is_bundle(path) else None
except bundles.RunError as error:
    st.error(f"The model's description could not be read: {error}")
    metadata = None

if metadata is None:
    st.warning(
        "No trained model is installed yet. Train one on the **Train** page, then make it the active model.",
        icon=":material/warning:",
    )
else:
    card = cards.model_card(metadata, path)
    with st.container(border=True):
        st.markdown(f"#### {wording.escape_markdown(card.name)}")
        st.markdown(wording.escape_markdown(card.description))
        st.markdown(cards.how_it_learned_text(metadata))
        for label, value in card.facts:
            st.markdown(f"**{label}:** {wording.escape_markdown(value)}")
        if card.optimistic:
            st.warning(
                "Optimistic figures: this model was scored on the same images that chose when training stopped "
                "(the paper's protocol).",
                icon=":material/info:",
            )
        if card.cards:
            st.markdown("**Accuracy**: the share of faces it gets right, on images it never learned from.")
            # Titled with the task and the data set (no evaluation heading here); no wider than the cards need.
            show_accuracy_cards(card.cards, title=lambda c: c.title, columns=min(4, len(card.cards)))
        else:
            st.info("This model has no recorded accuracy yet; evaluate it on the Evaluate page.")

st.subheader("Where to go next")
st.page_link("pages/predict.py", label="Predict: upload photos or use the camera", icon=":material/photo_camera:")
st.page_link(
    "pages/evaluate.py",
    label="Evaluate: accuracy, confusions, mistakes and fairness across groups",
    icon=":material/analytics:",
)
st.page_link(
    "pages/train.py", label="Train: teach a new model on the data sets available", icon=":material/model_training:"
)
