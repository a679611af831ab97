"""Test support (not shipped): an Ollama-compatible server over the real models, with faults."""
