"""golive: take LLM applications live, on your own machine."""

__version__ = "0.1.0"
