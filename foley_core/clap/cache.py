"""Embedding cache: one ``<kind>.npz`` per modality (audio, text), keyed by (model version, key).

Audio rows are keyed by clip content hash, text rows by the exact string. Each ``.npz`` holds the
keys, the rows and the model version together and is replaced by one atomic rename, so a reader
can never pair one writer's index with another's rows. Writers take an inter-process lock
(``.lock``) and re-read the file under it before appending, so concurrent writers never drop each
other's rows; encoding happens outside the lock. A different model version empties the cache
(every embedding is recomputed). No pickles anywhere: keys are a fixed-width unicode array.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from foley_core.clap.evaluate import read_clips
from foley_core.core.audio import write_text_atomic
from foley_core.core.fsutil import atomic_file, exclusive_lock
from foley_core.core.layout import layout

META = "cache.json"
LOCK = ".lock"
FORMAT = 2  # 1 was <kind>.npy + <kind>_index.csv, written one after the other
KINDS = ("audio", "text")


def cached_model_version(root: Path) -> str | None:
    """The CLAP version a cache folder holds embeddings of (None: no cache), read without
    opening it (opening with another version empties it)."""
    try:
        return json.loads((Path(root) / META).read_text()).get("model_version")
    except (FileNotFoundError, ValueError, AttributeError):
        return None


class EmbeddingCache:
    def __init__(self, root: Path, model_version: str):
        self.root = Path(root)
        self.model_version = model_version
        self.root.mkdir(parents=True, exist_ok=True)
        if self._meta() != self._expected_meta():  # check again under the lock: another process may reset too
            with exclusive_lock(self.root / LOCK):
                if self._meta() != self._expected_meta():
                    for kind in KINDS:  # another model (or the old two-file layout): start empty
                        for name in (f"{kind}.npz", f"{kind}.npy", f"{kind}_index.csv"):
                            (self.root / name).unlink(missing_ok=True)
                    write_text_atomic(self.root / META, json.dumps(self._expected_meta()))
        self._tables = {kind: self._load(kind) for kind in KINDS}

    # ---------------------------------------------------------------- storage

    def _expected_meta(self) -> dict:
        return {"model_version": self.model_version, "format": FORMAT}

    def _meta(self) -> dict | None:
        try:
            return json.loads((self.root / META).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _load(self, kind: str) -> tuple[dict[str, int], np.ndarray | None]:
        path = self.root / f"{kind}.npz"
        if not path.is_file():
            return {}, None
        with np.load(path, allow_pickle=False) as data:
            if str(data["model_version"]) != self.model_version:  # reset by another model since we opened
                return {}, None
            keys, rows = data["keys"].tolist(), data["rows"]
        return {key: i for i, key in enumerate(keys)}, rows

    def _append(self, kind: str, keys: list[str], rows: np.ndarray) -> None:
        with exclusive_lock(self.root / LOCK):
            meta = self._meta()
            if meta != self._expected_meta():
                raise RuntimeError(f"embedding cache {self.root} was reset for model {(meta or {}).get('model_version')} "
                                   f"while this process was using it for {self.model_version}: open a new EmbeddingCache")
            index, array = self._load(kind)  # what is on disk now: others may have appended since we loaded
            new = [i for i, key in enumerate(keys) if key not in index]  # or computed the same keys
            if new:
                all_keys = [*index, *(keys[i] for i in new)]  # dict order is row order
                array = rows[new] if array is None else np.concatenate([array, rows[new]])
                _save_npz_atomic(self.root / f"{kind}.npz", keys=np.array(all_keys, dtype=str),
                                 rows=array.astype(np.float32), model_version=np.array(self.model_version))
                index = {key: i for i, key in enumerate(all_keys)}
        self._tables[kind] = (index, array)

    def _table_with(self, kind: str, keys) -> tuple[dict[str, int], np.ndarray | None]:
        """The table, reloaded from disk once if it lacks any of ``keys`` (another process may have added them)."""
        index, array = self._tables[kind]
        if any(k not in index for k in keys):
            self._tables[kind] = self._load(kind)
            index, array = self._tables[kind]
        return index, array

    def _get(self, kind: str, keys) -> np.ndarray:
        index, array = self._table_with(kind, keys)
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
        self._tables["audio"] = self._load("audio")  # reuse what other processes computed meanwhile
        index, _ = self._tables["audio"]
        todo = manifest.drop_duplicates("content_hash")
        todo = todo[~todo["content_hash"].isin(index)]
        if len(todo):
            clips = read_clips(todo["abs_path"], encoder.sample_rate)
            self._append("audio", list(todo["content_hash"]), encoder.encode_audio(clips, encoder.sample_rate).numpy())
        return {"computed": int(len(todo)), "reused": int(manifest["content_hash"].nunique() - len(todo))}

    def update_text(self, encoder, texts: list[str]) -> dict:
        self._check(encoder)
        self._tables["text"] = self._load("text")
        index, _ = self._tables["text"]
        unique = list(dict.fromkeys(texts))
        todo = [t for t in unique if t not in index]
        if todo:
            self._append("text", todo, encoder.encode_text(todo).numpy())
        return {"computed": len(todo), "reused": len(unique) - len(todo)}

    def known(self, kind: str, keys) -> dict[str, np.ndarray]:
        """The rows of those ``keys`` that are cached (reloading from disk once, not once per miss)."""
        keys = list(keys)
        index, array = self._table_with(kind, keys)
        return {k: array[index[k]] for k in keys if k in index}

    def audio(self, content_hashes) -> np.ndarray:
        return self._get("audio", list(content_hashes))

    def text(self, texts) -> np.ndarray:
        return self._get("text", list(texts))

    def __len__(self) -> int:
        return len(self._tables["audio"][0]) + len(self._tables["text"][0])

    def _check(self, encoder) -> None:
        if encoder.version != self.model_version:
            raise ValueError(f"cache holds model {self.model_version}, encoder is {encoder.version}: open a new EmbeddingCache")


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a name
        np.savez(handle, **arrays)


def cached_audio_embeddings(profile, clap_version: str, manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """content_hash -> CLAP audio embedding, read from the per-class caches (nothing recomputed)."""
    conditioning: dict[str, np.ndarray] = {}
    for label, rows in manifest.groupby("class"):
        hashes = list(rows["content_hash"])
        conditioning.update(zip(hashes, EmbeddingCache(layout(profile).embeddings(label), clap_version).audio(hashes)))
    return conditioning


def cached_text_embedder(profile, encoder):
    """texts -> embeddings through the class caches first (captions, prompts), the encoder otherwise."""
    caches = [EmbeddingCache(layout(profile).embeddings(c), encoder.version) for c in profile.class_names]

    def embed(texts: list[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        for cache in caches:  # each distinct text once: a fine-tune asks for thousands, mostly repeats
            found.update(cache.known("text", [t for t in dict.fromkeys(texts) if t not in found]))
        for text in dict.fromkeys(t for t in texts if t not in found):
            found[text] = encoder.encode_text([text]).cpu().numpy()[0]
        return np.stack([found[text] for text in texts])

    return embed
