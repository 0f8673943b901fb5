import pytest

from foley_core.core.config import DCASE_CLASS_IDS, ConfigError, load_profile


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_every_profile_loads_with_the_seven_dcase_classes(name):
    profile = load_profile(name)
    assert profile.name == name
    assert [c.name for c in profile.classes] == list(DCASE_CLASS_IDS)  # the DCASE order (class id = index)
    assert all(c.prompts for c in profile.classes)


def test_paper_profile_uses_the_winning_submission_settings():
    profile = load_profile("paper")
    vehicle = profile.class_config("MovingMotorVehicle")
    assert (vehicle.candidates, vehicle.guidance, vehicle.model) == (10, 3.0, "big")
    assert profile.class_config("DogBark").clap_floor == 0.30
    assert profile.generation.steps == 200 and profile.generation.clips_per_class == 100
    assert profile.audio.sample_rate == 16000 and profile.audio.hop_length == 160 and profile.audio.n_mels == 64


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"audio\.sample_rat.*[Ee]xtra"):
        load_profile("smoke", {"audio": {"sample_rat": 16000}})


def test_bad_value_names_the_key_and_reason():
    with pytest.raises(ConfigError, match=r"audio\.sample_rate"):
        load_profile("smoke", {"audio": {"sample_rate": -5}})
    with pytest.raises(ConfigError, match=r"f_max"):
        load_profile("smoke", {"audio": {"sample_rate": 8000, "f_max": 8000}})


def test_bad_source_kind_and_empty_prompt_are_rejected():
    with pytest.raises(ConfigError, match="data.sources"):
        load_profile("smoke", {"data": {"sources": [{"kind": "ftp", "path": "x"}]}})
    with pytest.raises(ConfigError, match="empty"):
        load_profile("smoke", {"classes": [{"name": "DogBark", "prompts": ["  "]}]})


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match="available: .*cpu"):
        load_profile("nope")


def test_fingerprint_is_stable_and_sensitive():
    a, b = load_profile("smoke"), load_profile("smoke")
    assert a.fingerprint("audio") == b.fingerprint("audio")
    c = load_profile("smoke", {"audio": {"clip_seconds": 2.0}})
    assert c.fingerprint("audio") != a.fingerprint("audio")
    assert c.fingerprint("classes") == a.fingerprint("classes")
