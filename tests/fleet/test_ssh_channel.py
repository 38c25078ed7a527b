"""fleetctl's SSH connection against a real sshd: early exits, bastions (ProxyJump), ssh-agent."""
from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from fleetctl import ssh
from fleetctl.sshconfig import Endpoint
from conftest import Lab


def _connect(lab: Lab, name: str) -> ssh.Connection:
    mac = lab.mac(name)
    return ssh.Connection(Endpoint(mac.address, 22, mac.user, (str(lab.key),), 5.0), lab.known_hosts, False)


def test_early_exit_reports_the_command_result_not_a_lost_connection(lab: Lab):
    """`sudo -n` on a password-sudo Mac exits at once; a large script cannot all be sent by then.
    That is the command's answer (rc 1, sudo's message), and the connection stays usable."""
    conn = _connect(lab, "mac-005")
    try:
        script = "# padding\n" * 800_000 + "echo never\n"  # 8 MB: more than any channel window
        result = conn.run(script, ssh.SUDO_NOPASSWD)
        assert result.rc == 1 and "password is required" in result.err, result
        assert "never" not in result.out
        assert conn.run("echo still here").out == "still here\n"
    finally:
        conn.close()


def test_a_mac_behind_the_bastion_is_reached_only_through_it(lab: Lab):
    """mac-020 refuses logins that do not come from the jump host (mac-019): the lab's
    inventory says -J, and one bastion connection carries every Mac behind it."""
    from fleetctl import inventory

    inv = inventory.load(lab.dir / "inventory.yml")
    direct = inventory.endpoint(inv.hosts["mac-020"])
    assert direct.jump and direct.jump.hostname == lab.mac("mac-019").address
    try:
        conns = [ssh.Connection(inventory.endpoint(inv.hosts[n]), lab.known_hosts, False)
                 for n in ("mac-020", "mac-021", "mac-022")]
        assert [c.run("uname -m").out for c in conns] == ["arm64\n", "x86_64\n", "arm64\n"]
        assert len(ssh.JUMPS.open) == 1
        for c in conns:
            c.close()
    finally:
        ssh.JUMPS.close()
    no_jump = Endpoint(direct.hostname, 22, "admin", (str(lab.key),), 5.0)
    with pytest.raises(ssh.Unreachable, match="authentication failed for admin@"):
        ssh.Connection(no_jump, lab.known_hosts, False)


def test_keys_in_ssh_agent_log_in(lab: Lab, tmp_path, monkeypatch):
    """No key file anywhere (empty HOME): only the ssh-agent holds the key."""
    sock = tmp_path / "agent.sock"
    started = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, text=True, check=True, timeout=10)
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", started.stdout)[1])
    try:
        subprocess.run(["ssh-add", "-q", str(lab.key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True, timeout=10)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))
        mac = lab.mac("mac-001")
        conn = ssh.Connection(Endpoint(mac.address, 22, "admin", (), 5.0), lab.known_hosts, False)
        assert conn.run("echo via agent").out == "via agent\n"
        conn.close()
    finally:
        os.kill(pid, signal.SIGTERM)


def test_an_unreachable_bastion_fails_every_mac_behind_it_with_its_reason(lab: Lab):
    dead = Endpoint(lab.mac("mac-010").address, 22, "admin", (str(lab.key),), 2.0)  # nothing answers there
    try:
        for name in ("mac-020", "mac-021"):
            target = Endpoint(lab.mac(name).address, 22, "admin", (str(lab.key),), 2.0, dead)
            with pytest.raises(ssh.Unreachable, match=r"jump host admin@198\.18\.\S+: timed out after 2s"):
                ssh.Connection(target, lab.known_hosts, False)
        assert list(ssh.JUMPS.failed) == [dead]  # tried once, not once per Mac
    finally:
        ssh.JUMPS.close()
