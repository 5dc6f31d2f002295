"""Model files from the Hugging Face cache and from timm's pretrained tags, offline first.

``hf:ORG/NAME[/FILE][@REVISION]`` (and timm's spelling ``hf-hub:ORG/NAME``) names a file of a
Hugging Face model repository: ``FILE``, else ``model.safetensors``, else ``pytorch_model.bin``, at
``REVISION`` (a branch, tag or commit; default ``main``). It is looked up in the local cache that
``huggingface_hub`` and timm manage (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``:
``models--ORG--NAME/refs/<revision>`` holds a commit, ``snapshots/<commit>/<file>`` the file) with
``local_files_only=True``; the network is used only when the caller allows it (``--download``).

A timm pretrained tag (``timm:vit_huge_patch14_gap_224.in1k_ijepa``) resolves through timm's
pretrained config: its Hugging Face repository when it has one (the same cache), else its URL,
looked up in torch hub's cache (``<torch hub dir>/checkpoints/<file name>``, where timm keeps it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jepa_eval.core.errors import JepaEvalError

HF_PREFIXES = ("hf:", "hf-hub:")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # tried in this order when no FILE is named


@dataclass(frozen=True)
class HubFile:
    """A model file on this machine and where it came from: a Hugging Face repository at a
    resolved commit, or a URL."""

    path: Path
    hub_id: str | None = None
    hub_revision: str | None = None
    hub_file: str | None = None
    url: str | None = None

    def origin(self) -> dict[str, str]:
        """Where the file came from, as a result record keeps it (the fields that are set)."""
        fields = {"hub_id": self.hub_id, "hub_revision": self.hub_revision, "hub_file": self.hub_file,
                  "url": self.url}
        return {key: value for key, value in fields.items() if value is not None}


def is_hub_spec(spec: str) -> bool:
    return spec.startswith(HF_PREFIXES)


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``hf:ORG/NAME[/FILE][@REVISION]`` (or ``hf-hub:...``) -> (``ORG/NAME``, FILE or None, REVISION or None)."""
    body = spec.split(":", 1)[1]
    name, _, revision = body.partition("@")
    parts = name.split("/")
    if len(parts) < 2 or not all(parts) or (revision == "" and "@" in body):
        raise JepaEvalError(f"bad Hugging Face model spec {spec!r}",
                            expected="hf:ORG/NAME, hf:ORG/NAME@REVISION or hf:ORG/NAME/FILE (hf-hub: alike)",
                            found=repr(spec))
    return "/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in use (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or the default)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_commit(path: Path) -> str | None:
    """The commit of a ``.../snapshots/<commit>/<file>`` path of the cache."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def _describe_cached(repo_id: str) -> str:
    """What the cache holds of ``repo_id``: nothing, its refs, or its snapshots and their files."""
    folder = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    if not folder.is_dir():
        return f"no folder {folder.name}/ in the cache {hub_cache_dir()}"
    refs = sorted(p.name for p in (folder / "refs").iterdir()) if (folder / "refs").is_dir() else []
    snapshots = sorted((folder / "snapshots").iterdir()) if (folder / "snapshots").is_dir() else []
    held = [f"snapshot {s.name[:12]} with {sorted(p.name for p in s.iterdir()) or 'no files'}" for s in snapshots]
    return f"refs {refs or 'none'}; " + ("; ".join(held) or "no snapshots")


def hub_file(repo_id: str, filenames: tuple[str, ...], revision: str | None, *, download: bool) -> HubFile:
    """The first of ``filenames`` the repository has at ``revision``: from the cache, else (when
    ``download``) from the network into the cache; an error naming the cache's content otherwise."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    for filename in filenames:
        try:
            path = huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, local_files_only=True)
            return HubFile(Path(path), repo_id, _cached_commit(Path(path)), filename)
        except LocalEntryNotFoundError:
            continue
    wanted = f"hf:{repo_id}" + (f"@{revision}" if revision else "")
    if not download:
        raise JepaEvalError(f"{wanted} is not in the Hugging Face cache, and downloading is off",
                            expected=f"{' or '.join(filenames)} under {hub_cache_dir()}/models--"
                                     f"{repo_id.replace('/', '--')}/snapshots/<commit>/ with refs/{revision or 'main'}",
                            found=_describe_cached(repo_id),
                            hint="pass --download to fetch it (network), or fetch it with "
                                 f"`hf download {repo_id}` where there is internet")
    for filename in filenames:
        try:
            path = huggingface_hub.hf_hub_download(repo_id, filename, revision=revision)
            return HubFile(Path(path), repo_id, _cached_commit(Path(path)), filename)
        except RemoteEntryNotFoundError:  # the repository has no such file: try the next name
            continue
        except (OSError, ValueError) as exc:  # network, offline mode, unknown repository or revision
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true") else ""
            raise JepaEvalError(f"downloading {filename} of {wanted} failed{offline}",
                                expected="a public (or logged-in) Hugging Face model repository and internet access",
                                found=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    raise JepaEvalError(f"{wanted} has none of the weight files", expected=" or ".join(filenames),
                        hint=f"name the file: hf:{repo_id}/FILE")


def url_file(url: str, *, download: bool) -> HubFile:
    """The file of ``url`` in torch hub's cache, where timm keeps URL weights; fetched when ``download``."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return HubFile(path, url=url)
    if not download:
        raise JepaEvalError(f"{path.name} is not in torch hub's cache, and downloading is off",
                            expected=f"the file {path} (from {url})", found="no such file",
                            hint="pass --download to fetch it, or give the file itself with --weights")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise JepaEvalError(f"downloading {url} failed", expected="internet access",
                            found=f"{type(exc).__name__}: {exc}") from exc
    return HubFile(path, url=url)


def timm_pretrained_file(name: str, *, download: bool) -> HubFile | None:
    """The weights of timm's pretrained tag ``ARCH.TAG`` (None for a bare ``ARCH``: random init)."""
    if "." not in name:
        return None
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # timm's refusal of a tag its architecture lacks
        cfg = None
    if cfg is None:
        arch = name.split(".", 1)[0]
        tags = timm.list_pretrained(f"{arch}.*")
        raise JepaEvalError(f"timm has no pretrained tag {name!r}",
                            expected=f"one of {', '.join(tags[:12]) or 'no tags of ' + arch}", found=repr(name))
    if cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else WEIGHT_FILES
        return hub_file(cfg.hf_hub_id, files, None, download=download)
    if cfg.url:
        return url_file(cfg.url, download=download)
    raise JepaEvalError(f"timm's tag {name!r} names no weights", expected="a Hugging Face repository or a URL",
                        found="neither", hint="give the weights file with --weights")
