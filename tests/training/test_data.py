"""Training chats rendered and tokenized as llama.cpp serves them; the loss mask covers the answers only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from yun.catalog.tokenizer import load_counter
from yun.gateway.prompt import as_engine_renders
from yun.jobs.training import ChatTokenizer, TrainingDataError, load_examples

# What llama.cpp renders and tokenizes for one user "Hi" (tests/integration/test_tiny_model.py checks it
# against the engine itself).
QWEN_HI_TOKENS = [
    151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264,
    10950, 17847, 13, 151645, 198, 151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198,
]  # fmt: skip
CHATS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "PERIWINKLE"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Héllo  wörld 12345 \n\n  code:\n```py\nprint('x')\n```"},
        {"role": "assistant", "content": " 你好, naïve\tanswer\n\n"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "second answer"},
    ],
]


@pytest.fixture(scope="module")
def chats(tiny_model: Path) -> ChatTokenizer:
    return ChatTokenizer.from_gguf(tiny_model)


def _trained_text(chats: ChatTokenizer, ids: tuple[int, ...], trained: tuple[bool, ...]) -> list[str]:
    """The trained tokens' text, one string per run of consecutive trained tokens."""
    runs: list[list[int]] = []
    for i, (token, on) in enumerate(zip(ids, trained, strict=True)):
        if on:
            if i == 0 or not trained[i - 1]:
                runs.append([])
            runs[-1].append(token)
    tokenizer = chats.counter.tokenizer
    return ["".join(tokenizer.id_to_token(t) for t in run) for run in runs]


def _byte_level(text: str) -> str:
    """`text` as the byte-level BPE vocabulary spells it (how `id_to_token` shows pieces)."""
    from tokenizers import pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return "".join(piece for piece, _ in byte_level.pre_tokenize_str(text))


def test_the_prompt_is_the_one_llama_cpp_serves(chats: ChatTokenizer, tiny_model: Path) -> None:
    assert chats.prompt_ids([{"role": "user", "content": "Hi"}]) == QWEN_HI_TOKENS
    counter = load_counter(tiny_model)
    assert counter is not None
    for messages in CHATS:
        answered = 0
        for cut in range(1, len(messages) + 1):
            if messages[cut - 1]["role"] != "assistant":
                continue
            prompt = chats.prompt_ids(messages[: cut - 1])
            assert len(prompt) == counter.chat({"messages": as_engine_renders(messages[: cut - 1])[0]})
            # The training example begins with exactly the prompt the answer is served after.
            example = chats.example({"messages": messages[:cut]})
            assert list(example.ids[: len(prompt)]) == prompt
            # Only the answers before this one are trained in its prompt; this one's tokens follow it.
            assert sum(example.trained[: len(prompt)]) == answered
            answered = example.trained_count


def test_the_mask_covers_each_answer_and_its_end_of_turn(chats: ChatTokenizer) -> None:
    example = chats.example({"messages": CHATS[1]})
    answers = [m["content"] for m in CHATS[1] if m["role"] == "assistant"]
    # Trailing whitespace of an answer is not trained (the template's newline after <|im_end|> neither).
    assert _trained_text(chats, example.ids, example.trained) == [
        _byte_level(answers[0]) + "<|im_end|>",
        _byte_level(answers[1]) + "<|im_end|>",
    ]


def test_weight_zero_and_end_of_turn_off(chats: ChatTokenizer, tiny_model: Path) -> None:
    messages = [dict(m) for m in CHATS[1]]
    messages[2]["weight"] = 0
    example = chats.example({"messages": messages})
    assert _trained_text(chats, example.ids, example.trained) == ["second" + _byte_level(" answer") + "<|im_end|>"]
    no_end = ChatTokenizer.from_gguf(tiny_model, train_end_of_turn=False).example({"messages": CHATS[0]})
    assert _trained_text(chats, no_end.ids, no_end.trained) == ["PERIWINKLE"]


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_bad_examples_are_errors_naming_their_line(chats: ChatTokenizer, tmp_path: Path) -> None:
    good = {"messages": CHATS[0]}
    examples = load_examples(_write(tmp_path / "ok.jsonl", [good, "", good]), chats, 64)
    assert [e.line for e in examples] == [1, 3]
    cases = {
        "line 2: 186 tokens, over the maximum of 64": [good, {"messages": CHATS[0] + CHATS[0] * 10}],
        "line 2: not JSON": [good, "{nope"],
        "line 1: expected an object with a `messages` list": [{"prompt": "x"}],
        "line 2: no assistant answer to train on": [good, {"messages": CHATS[0][:1]}],
    }
    for message, lines in cases.items():
        with pytest.raises(TrainingDataError) as caught:
            load_examples(_write(tmp_path / "bad.jsonl", lines), chats, 64)
        assert message.split(":")[0] in caught.value.message
        assert message.split(" ", 2)[2].split(" (")[0] in caught.value.message
