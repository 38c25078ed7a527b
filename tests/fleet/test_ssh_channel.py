"""fleetctl's SSH connection against a real sshd: commands that exit before reading all their stdin."""
from __future__ import annotations

from fleetctl import ssh
from conftest import Lab


def _connect(lab: Lab, name: str) -> ssh.Connection:
    mac = lab.mac(name)
    return ssh.Connection(mac.address, 22, mac.user, str(lab.key), lab.known_hosts, accept_new=False)


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
