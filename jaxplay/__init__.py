"""jaxplay: self-play RL of language models on text games, compiled end to end in JAX."""
