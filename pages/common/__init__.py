"""Streamlit code shared by several pages. It lives here, not in mtfer, because mtfer never imports streamlit."""
