"""The tools chatsite ships for the model to call (CHAT_TOOLS names them): all work offline."""

from .calculator import calculator
from .clock import current_time
from .search import search_threads

__all__ = ["calculator", "current_time", "search_threads"]
