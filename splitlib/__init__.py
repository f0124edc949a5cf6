"""splitlib — the library behind the splitreason notebooks (SplitReason: Learning To Offload Reasoning)."""

__version__ = "0.1.0"
