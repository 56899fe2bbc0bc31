"""What both model-format converters (convert_ct2_whisper, convert_ort_moonshine) do once their tensors are
read: build the transformers model holding exactly those tensors, and write the converted folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_folder

MARKER = "lorakit_bundled.json"  # written last in a converted folder: what it was converted from, and how


def assign_weights(model_class: Any, config: Any, state: dict[str, np.ndarray], source: str,
                   may_miss: Iterable[str] = ()) -> Any:
    """`model_class(config)` holding the converted `state` (built on the meta device, then the arrays
    assigned: no second copy in memory); a RuntimeError naming `source` when a weight is missing (beyond
    `may_miss`, e.g. an output projection tied to the embedding) or one is left over."""
    import torch

    with torch.device("meta"):
        model = model_class(config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False,
                                                assign=True)
    missing = [k for k in missing if k not in set(may_miss)]
    if missing or unexpected:
        raise RuntimeError(f"{source}: conversion mismatch: missing={missing} unexpected={unexpected}")
    return model


def write_converted(dst: Path, model: Any, processor: Any, marker: dict, copies: dict[str, Path] | None = None) -> None:
    """The converted folder `dst`, written atomically: the model (safetensors), its processor, `copies`
    (name in the folder -> source file) and, last, the marker."""
    with atomic_folder(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        for name, source in (copies or {}).items():
            shutil.copyfile(source, tmp / name)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
