"""Models on the Hugging Face Hub: ``hf://owner/name[@revision]`` wherever a model is named, and
``vaekit push RUN owner/name``.

Everything goes through ``huggingface_hub`` (the optional extra: ``pip install 'vaekit[hub]'``),
so its settings hold: downloads land in its cache (``HF_HUB_CACHE``), ``HF_HUB_OFFLINE=1`` reads
the cache alone, and ``HF_TOKEN`` or ``hf auth login`` authorise an upload. A downloaded model is
a folder of that cache: commands read it and write their outputs elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaekit.errors import ConfigError, first_line
from vaekit.version import __version__

PREFIX = "hf://"
# what a model folder holds (vaekit export): nothing else is downloaded, pickles least of all
MODEL_FILES = ["*.json", "*.jsonl", "*.safetensors", "*.md", "*.png"]


def is_hub_id(name: object) -> bool:
    """Whether ``name`` is a Hub id, ``hf://owner/name[@revision]``."""
    return isinstance(name, str) and name.startswith(PREFIX)


def parse_hub_id(name: str) -> tuple[str, str | None]:
    """``("owner/name", revision or None)`` of ``hf://owner/name[@revision]``."""
    repo, at, revision = name.removeprefix(PREFIX).partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or (at and not revision):
        raise ConfigError(
            f"{name!r} is not a Hub id: write hf://owner/name or hf://owner/name@revision"
        )
    return repo, revision or None


def parse_repo(repo: str) -> tuple[str, str | None]:
    """``("owner/name", revision or None)`` of a repository named ``owner/name[@revision]``,
    with or without ``hf://``."""
    return parse_hub_id(repo if is_hub_id(repo) else PREFIX + repo)


def hub_folder(name: str) -> Path:
    """The local folder of the Hub model ``name``: downloaded into the Hugging Face cache, or
    found there (offline)."""
    repo, revision = parse_hub_id(name)
    hub = _huggingface_hub()
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    try:
        folder = hub.snapshot_download(
            repo,
            revision=revision,
            allow_patterns=MODEL_FILES,
            library_name="vaekit",
            library_version=__version__,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise ConfigError(
            f"{name} is not in the Hugging Face cache and the Hub cannot be reached: download "
            "it once online (HF_HUB_OFFLINE unset)"
        ) from None
    except HFValidationError:
        raise ConfigError(f"{name!r} is not a valid Hub repository id") from None
    except HfHubHTTPError as err:
        raise ConfigError(f"{name}: {first_line(err)}") from None
    return Path(folder)


def upload_folder(folder: Path, repo: str, private: bool = False) -> str:
    """Upload ``folder`` to the Hub repository ``repo`` (``owner/name`` or ``hf://owner/name``,
    created if new; ``@revision``: that branch); return the commit's address."""
    repo, revision = parse_repo(repo)
    hub = _huggingface_hub()
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = hub.HfApi(library_name="vaekit", library_version=__version__)
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            revision=revision,
            commit_message=f"vaekit {__version__}: {folder.name}",
        )
    except LocalTokenNotFoundError:
        raise ConfigError(
            "no Hugging Face token: log in with 'hf auth login', or set HF_TOKEN"
        ) from None
    except HfHubHTTPError as err:
        raise ConfigError(f"pushing to {repo}: {first_line(err)}") from None
    return str(getattr(commit, "commit_url", commit))


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError(
            "Hub models need the huggingface_hub package: pip install 'vaekit[hub]'"
        ) from None
    return huggingface_hub
