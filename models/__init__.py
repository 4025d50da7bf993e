"""The shipped model, as package data: installed as `mtfer.shipped`, found by mtfer.core.bundles.DEFAULT_BUNDLE."""
