"""Finding and loading reward checkpoints: a local path first, then the Hugging Face cache / hub.

Every error is one line that names what to fetch and the option that passes a local copy
(``--reward-opt NAME.path=...``; ``path`` is the standard key of every reward factory).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from cogrpo.errors import CheckpointError, WeightsNotFoundError


def hint(reward: str, filename: str, option: str = "path") -> str:
    """The flag that passes a local copy of ``filename`` to ``reward``."""
    return f"--reward-opt {reward}.{option}=/path/to/{filename}"


def resolve_file(
    reward: str,
    *,
    path: str | Path | None,
    repo_id: str | None,
    filenames: Sequence[str],
    option: str = "path",
    source: str | None = None,
) -> Path:
    """Return a local checkpoint file.

    ``path`` may be the file itself or a folder holding one of ``filenames``. Without ``path`` the
    file comes from the Hugging Face cache (or the hub when online: ``HF_HUB_OFFLINE=1`` keeps it
    offline). ``source`` names where to fetch the file when it is not on the hub.
    """
    where = source or (f"https://huggingface.co/{repo_id}" if repo_id else "its release page")
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            for name in filenames:
                if (p / name).is_file():
                    return p / name
            raise WeightsNotFoundError(
                f"{reward}: none of {', '.join(filenames)} in {p}; fetch {filenames[0]} from {where} "
                f"and pass {hint(reward, filenames[0], option)}"
            )
        if p.is_file():
            return p
        raise WeightsNotFoundError(
            f"{reward}: no file at {p}; fetch {filenames[0]} from {where} and pass {hint(reward, filenames[0], option)}"
        )
    if repo_id is None:
        raise WeightsNotFoundError(
            f"{reward}: needs a local checkpoint; fetch {filenames[0]} from {where} "
            f"and pass {hint(reward, filenames[0], option)}"
        )
    from huggingface_hub import hf_hub_download

    reason = ""
    for name in filenames:
        try:
            return Path(hf_hub_download(repo_id, name))
        except Exception as exc:  # offline, not cached, missing file, no network: all mean "not here"
            reason = type(exc).__name__
    raise WeightsNotFoundError(
        f"{reward}: {filenames[0]} of {repo_id} is not in the Hugging Face cache and the hub is unreachable "
        f"({reason}); fetch it from {where} and pass {hint(reward, filenames[0], option)}"
    )


def load_state_dict_file(file: str | Path, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (restricted ``weights_only`` unpickler).

    ``key``: the entry holding the state dict when the file stores a dict around it (HPS:
    ``"state_dict"``); a file without that entry is taken as the state dict itself.
    """
    file = Path(file)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {file} as a torch state dict ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from exc
    if key is not None and isinstance(obj, dict) and key in obj:
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file} does not hold a state dict of tensors")
    return obj


def _examples(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_state_dict(
    module: nn.Module, state_dict: dict[str, torch.Tensor], *, reward: str, source: str | Path
) -> None:
    """Strict key and shape check: a one-line error listing a few missing / unexpected names."""
    expected = module.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    wrong_shape = [k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if wrong_shape:
        k = sorted(wrong_shape)[0]
        problems.append(
            f"{len(wrong_shape)} shape mismatches ({k}: {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)})"
        )
    if problems:
        raise CheckpointError(
            f"{reward}: {source} does not match the {reward} architecture: {'; '.join(problems)}; "
            f"pass the official checkpoint with --reward-opt {reward}.path=..."
        )


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], *, reward: str, source: str | Path) -> None:
    """:func:`check_state_dict`, then ``load_state_dict(strict=True)``."""
    check_state_dict(module, state_dict, reward=reward, source=source)
    module.load_state_dict(state_dict, strict=True)


def resolve_folder(
    reward: str, *, path: str | Path | None, repo_id: str, filenames: Sequence[str], option: str
) -> Path:
    """A folder holding all of ``filenames``: ``path`` itself, or the HF cache snapshot of ``repo_id``.

    transformers 5 silently builds an empty tokenizer when its files are missing, so the files are
    located here first and a missing one is a one-line error.
    """
    where = f"https://huggingface.co/{repo_id}"
    if path is not None:
        folder = Path(path).expanduser()
        if folder.is_file():
            folder = folder.parent
        missing = [f for f in filenames if not (folder / f).is_file()]
        if missing:
            raise WeightsNotFoundError(
                f"{reward}: {', '.join(missing)} not in {folder}; fetch {', '.join(filenames)} from {where} "
                f"and pass --reward-opt {reward}.{option}=/path/to/folder"
            )
        return folder
    from huggingface_hub import hf_hub_download

    files = []
    for name in filenames:
        try:
            files.append(Path(hf_hub_download(repo_id, name)))
        except Exception as exc:
            raise WeightsNotFoundError(
                f"{reward}: {name} of {repo_id} is not in the Hugging Face cache and the hub is unreachable "
                f"({type(exc).__name__}); fetch {', '.join(filenames)} from {where} and pass "
                f"--reward-opt {reward}.{option}=/path/to/folder"
            ) from exc
    return files[0].parent
