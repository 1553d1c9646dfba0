"""Hostile stream entries: the codec's totality, and consumers (in-process and live) that must survive them."""
