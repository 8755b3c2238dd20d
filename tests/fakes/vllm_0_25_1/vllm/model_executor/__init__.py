"""Package of the normbench fake of vLLM 0.25.1 (see ``vllm/__init__.py``)."""
