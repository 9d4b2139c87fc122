"""Reply providers, chosen by the CHAT_PROVIDER setting like Django's SESSION_ENGINE."""

import functools

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .base import (
    BaseProvider,
    ProviderError,
    RedactedThinking,
    ReplyEnd,
    ReplyEvent,
    ReplyRequest,
    TextDelta,
    ThinkingDelta,
    ThinkingEnd,
    ToolCall,
    ToolSpec,
    Turn,
)

__all__ = [
    "BaseProvider",
    "ProviderError",
    "RedactedThinking",
    "ReplyEnd",
    "ReplyEvent",
    "ReplyRequest",
    "TextDelta",
    "ThinkingDelta",
    "ThinkingEnd",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "get_provider",
]

PROVIDER_ALIASES = {
    "scripted": "streaming.providers.scripted.ScriptedProvider",
    "anthropic": "streaming.providers.anthropic.AnthropicProvider",
}


@functools.cache
def get_provider() -> BaseProvider:
    """Return the configured provider: an alias from PROVIDER_ALIASES or a dotted path."""
    path = PROVIDER_ALIASES.get(settings.CHAT_PROVIDER, settings.CHAT_PROVIDER)
    return import_string(path)()


@receiver(setting_changed)
def _reset_provider(*, setting: str, **kwargs) -> None:
    if setting.startswith(("CHAT_", "ANTHROPIC_", "SCRIPTED_")):
        get_provider.cache_clear()
