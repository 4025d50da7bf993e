"""Photos, folders, videos and the live camera through the Predictor: uploads checked, faces tracked over time,
labels drawn beside faces in one palette, answers in people's words, and the CSV tables they give."""
