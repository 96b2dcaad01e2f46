"""Setting a device up from its config alone: unknown keys refused, no key or broker secret
before enrollment, the simulated device provisioned by `ota-agent sim provision`, and every
backend problem one line that says where it is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import TOKEN_ENV, enrollment_token, main
from agent.config import load_config
from agent.errors import ConfigError
from agent.identity import KEY_FILE, DeviceKey, device_key
from hardware.sim import SimDevice

CONFIG = """\
device_id = "sim-1"
model = "rpi4"
channel = "stable"
server_url = "http://127.0.0.1:9"
trusted_root = "root.json"
data_dir = "data"

[slot]
backend = "sim"
root = "sim"
"""


def write_config(folder: Path, text: str = CONFIG) -> Path:
    path = folder / "agent.toml"
    path.write_text(text)
    return path


def test_before_enrollment_the_config_loads_without_a_key(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.broker_secret == ""
    assert device_key(config.data_dir) is None
    assert config.data_dir / KEY_FILE == tmp_path / "data" / "device_key"


def test_a_broker_secret_file_named_in_the_config_is_read_once_it_exists(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG.replace("[slot]", 'broker_secret_file = "c"\n[slot]'))
    assert load_config(path).broker_secret == ""
    (tmp_path / "c").write_text("secret\n")
    assert load_config(path).broker_secret == "secret"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (CONFIG.replace("[slot]", 'chanel = "beta"\n[slot]'), "chanel"),
        (CONFIG + "\n[health]\ndeadline = 5\n", "[health] key(s) in config: deadline"),
    ],
)
def test_unknown_config_keys_are_refused(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown .*docs/agent.md#configuration") as caught:
        load_config(write_config(tmp_path, text))
    assert named in str(caught.value)


def test_a_broker_cluster_is_a_list_of_its_nodes(tmp_path: Path) -> None:
    nodes = 'broker_urls = ["mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883"]\n'
    config = load_config(write_config(tmp_path, CONFIG.replace("[slot]", nodes + "[slot]")))
    assert config.brokers == ["mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883"]
    one = 'broker_url = "mqtt://10.0.0.1:1883"\n'
    assert load_config(
        write_config(tmp_path, CONFIG.replace("[slot]", one + "[slot]"))
    ).brokers == ["mqtt://10.0.0.1:1883"]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('broker_urls = "mqtt://a:1"', "must be a list"),
        ("broker_urls = [1, 2]", "must be a list"),
        ('broker_urls = ["http://a:1"]', "must look like mqtt://"),
        ('broker_urls = ["mqtt://a:1", "mqtts://b:2"]', "all be mqtt:// or all be mqtts://"),
        ("broker_urls = [" + ", ".join(['"mqtt://a:1"'] * 17) + "]", "give 1 to 16"),
        ('broker_url = "mqtt://a:1"\nbroker_urls = ["mqtt://b:1"]', "not both"),
    ],
)
def test_a_bad_broker_list_is_one_clear_refusal(tmp_path: Path, line: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(write_config(tmp_path, CONFIG.replace("[slot]", line + "\n[slot]")))


def test_sim_provision_makes_the_device_at_the_configs_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # paths in the config are relative to the config
    assert main(["sim", "provision", "--config", str(config), "--slot-size-mb", "1"]) == 0
    assert SimDevice(tmp_path / "sim").model == "rpi4"
    assert main(["sim", "provision", "--config", str(config)]) == 0  # twice: left as it is
    assert "already exists" in capsys.readouterr().out


def test_run_before_enrollment_says_how_to_enroll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(write_config(tmp_path))]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ota-agent: error: no device key in ")
    assert "ota-agent enroll --config" in line


def test_a_missing_simulated_device_is_one_line_saying_how_to_make_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    DeviceKey.generate().save(tmp_path / "data" / KEY_FILE)  # enrolled
    (tmp_path / "root.json").write_text("{}")
    assert main(["run", "--config", str(write_config(tmp_path))]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "ota-agent sim provision --config" in line
    assert line.endswith("(see docs/agent.md)")


# --------------------------------------------------------------------------- the enrollment token


def test_the_enrollment_token_comes_from_a_file_then_the_option_then_the_environment(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "enroll-token"
    token_file.write_text("from-file\n")
    env = {TOKEN_ENV: "from-env"}
    assert enrollment_token(None, token_file, env) == "from-file"
    assert enrollment_token("from-option", None, env) == "from-option"
    assert enrollment_token(None, None, env) == "from-env"


@pytest.mark.parametrize(
    ("token", "file_text", "env", "says"),
    [
        (None, None, {}, "no enrollment token"),
        (None, None, {TOKEN_ENV: ""}, "no enrollment token"),
        (None, "", {}, "is empty, too long or not one line"),
        (None, "two\nlines", {}, "not one line"),
        ("x" * 5000, None, {}, "too long"),
        (None, "missing", {}, "cannot read the enrollment token"),
    ],
)
def test_no_usable_enrollment_token_is_one_line_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
    file_text: str | None,
    env: dict[str, str],
    says: str,
) -> None:
    config = write_config(tmp_path)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["enroll", "--config", str(config)]
    if token is not None:
        args += ["--token", token]
    if file_text is not None:
        token_file = tmp_path / "enroll-token"
        if file_text != "missing":
            token_file.write_text(file_text)
        args += ["--token-file", str(token_file)]
    assert main(args) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0, error
    assert says in error
    assert "x" * 100 not in error  # the token itself is not echoed
    assert not (tmp_path / "data" / KEY_FILE).exists()  # no key made for nothing
