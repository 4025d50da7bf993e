"""The app's pages. Streamlit runs each pages/*.py file as a script; the packages below them (common/,
predict_modes/) hold the Streamlit code the pages share and are never listed as pages (Streamlit's pages-folder mode
lists only the .py files directly in pages/, and never __init__.py)."""
