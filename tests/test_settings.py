"""Settings from the environment: URLs from secret files, yes-or-no values, and no password in a repr."""

from __future__ import annotations

import pathlib

import pytest

from shared.settings import Settings, SettingsError

URL = "redis://consumer:s3cret-pass@redis.internal:6379/0"


def test_a_url_is_read_from_the_file_its_file_variable_names(tmp_path: pathlib.Path) -> None:
    # Given secret files as Docker mounts them, with a trailing newline
    (tmp_path / "redis").write_text(URL + "\n")
    (tmp_path / "db").write_text("postgresql://odds:pw@db:5432/odds?sslmode=verify-full\n")
    env = {"REDIS_URL_FILE": str(tmp_path / "redis"), "DATABASE_URL_FILE": str(tmp_path / "db")}
    # When settings are read
    settings = Settings.from_env(env)
    # Then the URLs are the files' contents, without the newline
    assert settings.redis_url == URL
    assert settings.database_url == "postgresql://odds:pw@db:5432/odds?sslmode=verify-full"


def test_a_url_and_its_file_variable_together_are_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "redis").write_text(URL)
    with pytest.raises(SettingsError, match="REDIS_URL and REDIS_URL_FILE are both set"):
        Settings.from_env({"REDIS_URL": URL, "REDIS_URL_FILE": str(tmp_path / "redis")})


def test_a_missing_secret_file_is_a_readable_error(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SettingsError, match=f"DATABASE_URL_FILE: cannot read {missing}: No such file"):
        Settings.from_env({"DATABASE_URL_FILE": str(missing)})


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("0", False), ("false", False)])
def test_yes_or_no_settings_read_words_and_digits(raw: str, value: bool) -> None:
    assert Settings.from_env({"ODDS_PRODUCER_HARD_CAP": raw}).producer_hard_cap is value


def test_a_yes_or_no_setting_refuses_anything_else() -> None:
    with pytest.raises(SettingsError, match="producer_hard_cap: cannot read 'maybe'"):
        Settings.from_env({"ODDS_PRODUCER_HARD_CAP": "maybe"})


def test_the_repr_of_settings_hides_the_passwords() -> None:
    # Given settings whose URLs carry passwords
    settings = Settings(redis_url=URL, database_url="postgresql://odds:pg-pass@db/odds")
    # When they are printed, as a traceback or a log would
    shown = repr(settings)
    # Then the hosts and users show, the passwords do not
    assert "s3cret-pass" not in shown and "pg-pass" not in shown
    assert "consumer:***@redis.internal" in shown and "odds:***@db" in shown
