"""Upper bounds on a request's tokens, known before the engine runs, to size its credit hold.

Byte-level BPE (Qwen, Llama, GPT) and WordPiece produce at most one token per UTF-8 byte of text,
plus the chat template's own tokens; so bytes + a per-message allowance bound the prompt from above,
and the hold always covers the real charge.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["chat_prompt_bound", "input_bound"]

_TEMPLATE_TOKENS = 64  # default system prompt and assistant header of the chat template
_PER_MESSAGE = 8  # <|im_start|>role\n ... <|im_end|>\n


def _size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode())
    return len(json.dumps(value, ensure_ascii=False).encode())


def chat_prompt_bound(body: dict[str, Any]) -> int:
    total = _TEMPLATE_TOKENS + _size(body.get("tools")) + _size(body.get("response_format"))
    for m in body.get("messages") or []:
        total += _PER_MESSAGE + _size(m.get("content")) + _size(m.get("name")) + _size(m.get("tool_calls"))
    return total


def input_bound(item: Any) -> int:
    """A completion prompt or an embedding input: text or token ids (+2 for BOS/EOS or CLS/SEP)."""
    if isinstance(item, str):
        return len(item.encode()) + 2
    if isinstance(item, list):
        return len(item) + 2
    return _size(item) + 2
