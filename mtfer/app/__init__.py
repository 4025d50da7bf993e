"""What the app's pages show, computed by pure functions that never import Streamlit: accuracy and model cards,
plotly figures, job status lines, and the words the Predict, video and live views use. Pages lay them out."""
