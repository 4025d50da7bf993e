"""`mtfer serve`: the four labels over HTTP (FastAPI on uvicorn; the optional extra `serve`)."""
