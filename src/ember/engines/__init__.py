"""Serving engines Ember ships (llama.cpp, vLLM, sentence-transformers): predictor classes
chosen with `engine:` in ember.yaml, imported only inside replicas."""
