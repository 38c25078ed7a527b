"""The simulated agent's own rules (its behaviour on a Mac is covered in tests/fleet)."""
import pytest

from fleetctl.lab.agent import qagent


@pytest.mark.parametrize("text, proxies, no_proxy", [
    ("https_proxy=https://10.0.0.1:8080\n", ["https://10.0.0.1:8080"], []),
    ('qualys_https_proxy="https://a:1;https://u:p%40ss@b:2"\n', ["https://a:1", "https://u:p%40ss@b:2"], []),
    ("https_proxy=https://x:1\nqualys_https_proxy=https://q:2\n", ["https://q:2"], []),
    ("export qualys_https_proxy=https://q:2\nexport no_proxy=qualys.com,.example\n", ["https://q:2"],
     ["qualys.com", ".example"]),
    ("# nothing\n", [], []),
])
def test_proxy_file_parsing(text, proxies, no_proxy):
    assert qagent.parse_proxy_file(text) == (proxies, no_proxy)


def test_no_proxy_matching_and_credentials():
    assert qagent._bypass("qagpublic.qg1.fleetlab.test", ["fleetlab.test"])
    assert qagent._bypass("fleetlab.test", [".fleetlab.test"])
    assert not qagent._bypass("evilfleetlab.test", ["fleetlab.test"])
    assert qagent._credential("p%40ss%3Aw%24rd%3B") == "p@ss:w$rd;"
    assert qagent._credential("#" + "c2VjcmV0") == "secret"


@pytest.mark.parametrize("key, good, bad", [
    ("ActivationId", "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11", "4b2ea2a4"),
    ("ServerUri", "https://qagpublic.qg2.apps.qualys.com/CloudAgent", "https://qagpublic.qg2.apps.qualys.com/"),
    ("LogLevel", "5", "6"), ("LogDestType", "syslog", "console"), ("UseSudo", "1", "yes"),
    ("User", "root", "no-such-user-here"), ("Group", "root", "no-such-group-here"),
    ("ProcessPriority", "-20", "-21"), ("QualysProxyOrder", "seq", "first"),
    ("CmdMaxTimeOut", "1800", "0"), ("HostIdSearchDir", "/etc/", "etc"),
])
def test_option_validation(key, good, bad):
    qagent.validate(key, good)
    with pytest.raises(qagent.Invalid, match=key):
        qagent.validate(key, bad)
