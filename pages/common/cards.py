"""Accuracy cards: one st.metric per task, the paper's figure beside ours (Home and Evaluate)."""

from collections.abc import Callable

import streamlit as st

from mtfer.app.cards import PAPER_NOTE, AccuracyCard


def show_accuracy_cards(cards: list[AccuracyCard], title: Callable[[AccuracyCard], str], columns: int) -> None:
    """The note on the paper's figures, then each card as a bordered metric with its paper caption under it, in
    `columns` columns (filled left to right, wrapping); `title` names each card."""
    st.caption(PAPER_NOTE)
    placed = st.columns(columns)
    for i, card in enumerate(cards):
        with placed[i % len(placed)]:
            st.metric(
                title(card),
                card.value,
                card.badge,
                delta_color=card.badge_color,
                delta_arrow="auto" if card.comparable else "off",
                help=card.help,
                border=True,
            )
            st.caption(card.paper_text)
