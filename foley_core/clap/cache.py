"""Embedding cache: one array file + one CSV index per modality, keyed by (model version, key).

Audio rows are keyed by clip content hash, text rows by the exact string. The cache is
append-only within one model version: arrays are written before their index, each by
atomic rename, so an interrupted write leaves at worst unindexed rows. A different model
version empties the cache (every embedding is recomputed). No pickles anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from foley_core.audio import write_text_atomic
from foley_core.clap.evaluate import read_clips

META = "cache.json"


class EmbeddingCache:
    def __init__(self, root: Path, model_version: str):
        self.root = Path(root)
        self.model_version = model_version
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / META
        if meta.is_file() and json.loads(meta.read_text()).get("model_version") != model_version:
            for kind in ("audio", "text"):
                (self.root / f"{kind}.npy").unlink(missing_ok=True)
                (self.root / f"{kind}_index.csv").unlink(missing_ok=True)
        write_text_atomic(meta, json.dumps({"model_version": model_version}))
        self._tables = {kind: self._load(kind) for kind in ("audio", "text")}

    # ---------------------------------------------------------------- storage

    def _load(self, kind: str) -> tuple[dict[str, int], np.ndarray | None]:
        index_path, array_path = self.root / f"{kind}_index.csv", self.root / f"{kind}.npy"
        if not index_path.is_file():
            return {}, None
        index = pd.read_csv(index_path, dtype={"key": str}, keep_default_na=False)
        array = np.load(array_path, allow_pickle=False)
        return dict(zip(index["key"], index["row"].astype(int))), array

    def _append(self, kind: str, keys: list[str], rows: np.ndarray) -> None:
        index, array = self._tables[kind]
        start = 0 if array is None else array.shape[0]
        array = rows if array is None else np.concatenate([array, rows])
        index = {**index, **{key: start + i for i, key in enumerate(keys)}}
        _save_npy_atomic(self.root / f"{kind}.npy", array.astype(np.float32))
        table = pd.DataFrame({"key": list(index), "row": list(index.values())})
        write_text_atomic(self.root / f"{kind}_index.csv", table.to_csv(index=False))
        self._tables[kind] = (index, array)

    def _get(self, kind: str, keys) -> np.ndarray:
        index, array = self._tables[kind]
        missing = [k for k in keys if k not in index]
        if missing:
            raise KeyError(f"{len(missing)} {kind} embedding(s) not cached for model {self.model_version}, e.g. {missing[0]!r}")
        if array is None:
            return np.zeros((0, 0), dtype=np.float32)
        return array[[index[k] for k in keys]]

    # ---------------------------------------------------------------- API

    def update_audio(self, encoder, manifest: pd.DataFrame) -> dict:
        """Embed every clip of ``manifest`` whose content hash is not cached yet (reads ``abs_path``)."""
        self._check(encoder)
        index, _ = self._tables["audio"]
        todo = manifest.drop_duplicates("content_hash")
        todo = todo[~todo["content_hash"].isin(index)]
        if len(todo):
            clips = read_clips(todo["abs_path"], encoder.sample_rate)
            self._append("audio", list(todo["content_hash"]), encoder.encode_audio(clips, encoder.sample_rate).numpy())
        return {"computed": int(len(todo)), "reused": int(manifest["content_hash"].nunique() - len(todo))}

    def update_text(self, encoder, texts: list[str]) -> dict:
        self._check(encoder)
        index, _ = self._tables["text"]
        unique = list(dict.fromkeys(texts))
        todo = [t for t in unique if t not in index]
        if todo:
            self._append("text", todo, encoder.encode_text(todo).numpy())
        return {"computed": len(todo), "reused": len(unique) - len(todo)}

    def audio(self, content_hashes) -> np.ndarray:
        return self._get("audio", list(content_hashes))

    def text(self, texts) -> np.ndarray:
        return self._get("text", list(texts))

    def __len__(self) -> int:
        return len(self._tables["audio"][0]) + len(self._tables["text"][0])

    def _check(self, encoder) -> None:
        if encoder.version != self.model_version:
            raise ValueError(f"cache holds model {self.model_version}, encoder is {encoder.version}: open a new EmbeddingCache")


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
