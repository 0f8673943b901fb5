"""Optional captioned corpora: a configured captions.csv that does not exist is a warning, not a crash."""

from __future__ import annotations

import logging

import pytest
import soundfile as sf
from conftest import tone

from foley_core.core.config import CaptionedCsvSource
from foley_core.data.raw import snapshot_raw_data
from foley_core.data.sources import discover_all, discover_source


def _dev_set(root):
    (root / "Rain").mkdir(parents=True)
    sf.write(root / "Rain/a.wav", tone(0.5, 16000), 16000)
    sf.write(root / "Rain/b.wav", tone(0.5, 16000, 300), 16000)
    return root


def test_missing_optional_captions_is_a_warning(smoke_profile, tmp_path, caplog):
    dev = _dev_set(tmp_path / "data/dev")
    missing = tmp_path / "data/pretrain/captions.csv"
    profile = smoke_profile([{"kind": "folder", "path": str(dev)}, {"kind": "captioned_csv", "path": str(missing)}])
    with caplog.at_level(logging.WARNING, logger="foley_core.data.sources"):
        snapshot = snapshot_raw_data(profile)
    assert len(snapshot.discovery.files) == 2 and snapshot.files_per_class() == {"Rain": 2}
    assert len(snapshot.warnings) == 1 and str(missing) in snapshot.warnings[0] and "skipped" in snapshot.warnings[0]
    assert snapshot.warnings == snapshot.discovery.warnings
    assert any(str(missing) in r.getMessage() for r in caplog.records)  # visible in the logs, too
    assert snapshot.versioned_by == "content-hash" and snapshot.version != "empty"
    # the dataset stage's own scan (create_synthetic=False) skips it the same way
    assert len(discover_all(profile, create_synthetic=False).files) == 2


def test_existing_captions_are_still_read(smoke_profile, tmp_path):
    dev = _dev_set(tmp_path / "data/dev")
    corpus = tmp_path / "data/pretrain"
    corpus.mkdir(parents=True)
    sf.write(corpus / "x.wav", tone(0.5, 16000, 700), 16000)
    (corpus / "captions.csv").write_text("path,caption\nx.wav,a bell rings\n")
    profile = smoke_profile([{"kind": "folder", "path": str(dev)}, {"kind": "captioned_csv", "path": str(corpus / "captions.csv")}])
    snapshot = snapshot_raw_data(profile)
    assert snapshot.warnings == [] and snapshot.files_per_class() == {"Rain": 2, "_unlabelled": 1}


def test_no_usable_source_is_a_clear_error(smoke_profile, tmp_path):
    profile = smoke_profile([{"kind": "captioned_csv", "path": str(tmp_path / "a/captions.csv")},
                             {"kind": "captioned_csv", "path": str(tmp_path / "b/captions.csv")}])
    with pytest.raises(FileNotFoundError, match="no usable data source"):
        snapshot_raw_data(profile)


def test_a_missing_required_source_is_still_an_error(smoke_profile, tmp_path):
    profile = smoke_profile([{"kind": "folder", "path": str(tmp_path / "no-dev-set")},
                             {"kind": "captioned_csv", "path": str(tmp_path / "captions.csv")}])
    with pytest.raises(FileNotFoundError, match="no-dev-set"):
        discover_all(profile)
    # a CSV named explicitly (the CLI's SOURCE argument) must exist
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_source(CaptionedCsvSource(kind="captioned_csv", path=tmp_path / "nope.csv"), profile)


def test_the_unlabelled_partition_of_a_missing_corpus_ingests_empty(smoke_profile, tmp_path):
    from foley_core.data.ingest import ingest_class, load_manifest
    from foley_core.data.sources import UNLABELLED, partition_keys

    dev = _dev_set(tmp_path / "data/dev")
    profile = smoke_profile([{"kind": "folder", "path": str(dev)},
                             {"kind": "captioned_csv", "path": str(tmp_path / "data/pretrain/captions.csv")}])
    assert UNLABELLED in partition_keys(profile)  # the partition exists (the CSV may appear later) ...
    found = discover_all(profile, create_synthetic=False)
    out = tmp_path / "dataset"
    result = ingest_class(UNLABELLED, [f for f in found.files if f.label == UNLABELLED], [], out, profile)
    assert result.clips == [] and len(load_manifest(out, [UNLABELLED])) == 0  # ... and is simply empty
