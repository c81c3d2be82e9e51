"""The systemd units: `systemd-analyze verify` passes and `security` rates each 2.5 or lower.

Both checks need systemd-analyze (Debian's `systemd` package), not a running systemd: `verify`
runs against a throwaway root holding the system's units, ours in /etc/systemd/system and a
stand-in for the virtualenv's python (verify wants every Exec*= binary to exist). Without the tool
the checks fail under CI (.ci/run installs it) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from relay.config import load_config

ROOT = Path(__file__).parents[1]
UNITS_DIR = ROOT / "systemd"
RELAY = "outpost-relay.service"
SIDECAR = "outpost-sidecar.service"
UNITS = (RELAY, SIDECAR)
INSTALL_PREFIX = "/opt/outpost/"  # where README "Install" puts the virtualenv
SYSTEM_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
MAX_EXPOSURE = 2.5
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")

Unit = dict[str, list[tuple[str, str]]]  # section -> (key, value) in file order


def parse_unit(path: Path) -> Unit:
    """Sections of a unit file, keys in order (systemd allows a key more than once)."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {raw!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, key: str, section: str = "Service") -> str:
    found = values(unit, key, section)
    assert len(found) == 1, f"{key}= set {len(found)} times in [{section}], wanted once"
    return found[0]


def seconds(span: str) -> float:
    """A systemd time span of the simple kinds the units use: "45s", "2min", "1min 30s", "90"."""
    scale = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * scale[unit]
    return total


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {name: parse_unit(UNITS_DIR / name) for name in UNITS}


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze not found: .ci/run must install the `systemd` package")
        pytest.skip("systemd-analyze not installed (Debian: apt-get install systemd)")
    return path


def exec_binaries(unit: Unit) -> list[str]:
    """The program of every Exec*= line, without systemd's -@:+! prefixes."""
    found = []
    for key, val in unit.get("Service", []):
        if key.startswith("Exec") and key not in ("ExecPaths", "ExecSearchPath") and val:
            found.append(val.split()[0].lstrip("-@:+!"))
    return found


def make_root(root: Path, units: dict[str, Unit]) -> Path:
    """A root for `verify --root`: the system's units, ours installed, their binaries present."""
    system = next((Path(d) for d in SYSTEM_UNIT_DIRS if Path(d, "sysinit.target").exists()), None)
    assert system is not None, f"no system units in {SYSTEM_UNIT_DIRS} (is systemd installed?)"
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    for name, unit in units.items():
        shutil.copy(UNITS_DIR / name, installed / name)
        for binary in exec_binaries(unit):
            target = root / binary.lstrip("/")
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if binary.startswith(INSTALL_PREFIX):  # exists once installed: a stand-in will do
                target.write_text("#!/bin/sh\nexit 0\n")
                target.chmod(0o755)
            elif Path(binary).exists():  # an OS tool (/bin/kill): the host's own must exist
                shutil.copy(binary, target)
    return root


def test_units_are_notify_services_of_one_static_user(units: dict[str, Unit]) -> None:
    for name, unit in units.items():
        assert value(unit, "Type") == "notify", name
        assert value(unit, "NotifyAccess") == "main", name
        assert value(unit, "User") == "outpost", name
        assert value(unit, "Group") == "outpost", name
        assert not values(unit, "DynamicUser"), f"{name}: the two units share a static user"
        assert value(unit, "StateDirectory") == "outpost", name
        assert value(unit, "ConfigurationDirectory") == "outpost", name
        assert value(unit, "WorkingDirectory") == "/var/lib/outpost", name
        assert value(unit, "WantedBy", "Install") == "multi-user.target", name
    assert value(units[RELAY], "ExecStart") == (
        "/opt/outpost/venv/bin/python -m relay --config /etc/outpost/outpost.toml"
    )
    assert value(units[SIDECAR], "ExecStart") == (
        "/opt/outpost/venv/bin/python -m sidecar --config /etc/outpost/outpost.toml"
    )


def test_only_the_relay_binds_privileged_ports_and_reloads(units: dict[str, Unit]) -> None:
    relay, sidecar = units[RELAY], units[SIDECAR]
    assert value(relay, "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert value(relay, "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert value(sidecar, "CapabilityBoundingSet") == ""
    assert value(sidecar, "AmbientCapabilities") == ""
    assert "CAP_" not in (UNITS_DIR / SIDECAR).read_text()
    assert value(relay, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert not values(sidecar, "ExecReload"), "the sidecar has no SIGHUP handler"


def test_stop_leaves_the_relay_time_to_drain(units: dict[str, Unit]) -> None:
    relay = units[RELAY]
    assert value(relay, "KillMode") == "mixed"  # SIGTERM to the main process: it drains
    drain = load_config(None).relay.drain_timeout
    assert seconds(value(relay, "TimeoutStopSec")) > drain
    for unit in units.values():
        assert value(unit, "Restart") == "on-failure"
        assert value(unit, "RestartPreventExitStatus") == "2"  # invalid config


def test_units_carry_the_required_hardening(units: dict[str, Unit]) -> None:
    required = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native",
        "ReadOnlyPaths": "/etc/outpost",
    }
    for name, unit in units.items():
        for key, want in required.items():
            assert value(unit, key) == want, f"{name}: {key}"
        assert values(unit, "SystemCallFilter")[0] == "@system-service", name
        assert not values(unit, "PrivateNetwork"), name


def test_sysusers_and_tmpfiles_match_the_units() -> None:
    sysusers = [ln.split() for ln in (UNITS_DIR / "outpost.sysusers").read_text().splitlines()]
    users = [f for f in sysusers if f and not f[0].startswith("#")]
    assert [f[:2] for f in users] == [["u", "outpost"]]
    tmpfiles = [ln.split() for ln in (UNITS_DIR / "outpost.tmpfiles").read_text().splitlines()]
    dirs = {f[1]: f[2:5] for f in tmpfiles if f and f[0] == "d"}
    assert dirs["/etc/outpost"] == ["0750", "root", "outpost"]
    assert dirs["/var/lib/outpost"] == ["0750", "outpost", "outpost"]


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(
    name: str, analyze: str, units: dict[str, Unit], tmp_path: Path
) -> None:
    root = make_root(tmp_path / "root", units)
    for binary in exec_binaries(units[name]):
        target = root / binary.lstrip("/")
        assert target.exists() and target.stat().st_mode & stat.S_IXUSR, (
            f"{binary} is missing on this machine (Debian: /bin/kill is in procps)"
        )
    proc = subprocess.run(
        [analyze, "verify", f"--root={root}", "--man=no", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, output
    assert output == "", f"verify warned (it exits 0 on ignored lines):\n{output}"


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security(name: str, analyze: str) -> None:
    proc = subprocess.run(
        [
            analyze,
            "security",
            "--offline=true",
            f"--threshold={MAX_EXPOSURE * 10:.0f}",  # in tenths: 25 is 2.5
            "--no-pager",
            str(UNITS_DIR / name),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = EXPOSURE.search(proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert found.group(1) == name
    exposure = float(found.group(2))
    assert exposure <= MAX_EXPOSURE, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
