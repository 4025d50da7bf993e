"""The Predict page's three modes, one module each: photos (uploads or a snapshot), the live camera and a video
file; shared.py holds what they share (the model's Predictor, the settings they read)."""
