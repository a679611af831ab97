"""SLM backends: Ollama over HTTP (the default), OpenAI-compatible servers, llama.cpp in process."""

from .base import SLMBackend
from .llama_cpp import LlamaCppSLM
from .models import gemma3_path, qwen_coder_05b_path, qwen_coder_15b_path, smollm2_path
from .ollama import OllamaSLM
from .openai_compat import OpenAICompatibleSLM
from .sampling import Sampler
from .spec import SLMSpec, parse_slm_spec, slm_from_spec

__all__ = [
    "LlamaCppSLM",
    "OllamaSLM",
    "OpenAICompatibleSLM",
    "SLMBackend",
    "Sampler",
    "SLMSpec",
    "gemma3_path",
    "parse_slm_spec",
    "qwen_coder_05b_path",
    "qwen_coder_15b_path",
    "slm_from_spec",
    "smollm2_path",
]
