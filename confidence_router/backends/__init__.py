"""SLM backends: Ollama over HTTP (the default) and llama.cpp in process (embedded)."""

from .base import SLMBackend
from .llama_cpp import LlamaCppSLM
from .models import gemma3_path, smollm2_path
from .ollama import OllamaSLM

__all__ = ["LlamaCppSLM", "OllamaSLM", "SLMBackend", "gemma3_path", "smollm2_path"]
