"""The bottom layer: the four tasks and their classes, photos decoded and faces found and aligned, the network,
model bundles, the runtimes that run a bundle (Keras, LiteRT, exported files) and the Predictor built on them."""
