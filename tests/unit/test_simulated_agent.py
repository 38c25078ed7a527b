"""The simulated agent's own rules (its behaviour on a Mac is covered in tests/fleet)."""
import ast
import gzip
import importlib
import io
import json
import re
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pytest

from fleetctl import xar
from fleetctl import cpio
from fleetctl.lab import hosts, pkgbuild, pod


def _as_on_a_mac(package: str, *names: str) -> list:
    """Import NAMES the way a simulated Mac does: top-level modules from one directory (the
    agent's from Contents/Resources, the shims' from /usr/local/bin/.lib), here PACKAGE's."""
    directory = str(resources.files(package))
    sys.path.insert(0, directory)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(directory)


agentcommon, agentdaemon, configtool, proxyfile, stringutil = _as_on_a_mac(
    "fleetctl.lab.agent", "agentcommon", "agentdaemon", "configtool", "proxyfile", "stringutil")
(logshow,) = _as_on_a_mac("fleetctl.lab.mac", "logshow")

P = {"host": "10.0.0.1", "port": 8080, "user": None, "password": None}


def proxy(host: str, port: int = 443, user=None, password=None) -> dict:
    return {"host": host, "port": port, "user": user, "password": password}


@pytest.mark.parametrize("text, proxies, no_proxy", [
    ("https_proxy=https://10.0.0.1:8080\n", [P], []),
    ("qualys_https_proxy=https://10.0.0.1:8080", [P], []),  # no final newline
    ('qualys_https_proxy="https://10.0.0.1:8080"\n', [P], []),  # one URL may be quoted
    ("qualys_https_proxy=https://proxy.corp.example.com\n", [proxy("proxy.corp.example.com")], []),  # port 443
    ('qualys_https_proxy="https://a.example.com:1;https://u:p%40ss@b.example.com:2"\n',
     [proxy("a.example.com", 1), proxy("b.example.com", 2, "u", "p@ss")], []),
    ("qualys_https_proxy=https://ops%40lab%3B2:p%40ss%3Aw%24rd%3B@10.0.0.1:8080\n",
     [proxy("10.0.0.1", 8080, "ops@lab;2", "p@ss:w$rd;")], []),
    ('qualys_https_proxy="' + ";".join(f"https://10.0.0.{n}" for n in range(1, 6)) + '"\n',
     [proxy(f"10.0.0.{n}") for n in range(1, 6)], []),
    ("export qualys_https_proxy=https://q.example.com:2\nexport no_proxy=qualys.com\n",
     [proxy("q.example.com", 2)], ["qualys.com"]),
    ("export no_proxy=.fleetlab.test\nexport qualys_https_proxy=https://10.0.0.1:8080\n", [P], [".fleetlab.test"]),
])
def test_proxy_file_forms_the_guide_defines(text, proxies, no_proxy):
    assert proxyfile.parse_proxy_file(text) == (proxies, no_proxy)


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("\n", "empty"),
    ("\n\n", "line 1 is blank"),
    ("# proxy\nqualys_https_proxy=https://10.0.0.1:8080\n", "line 1"),
    ("qualys_https_proxy=https://10.0.0.1:8080\n\n", "line 2 is blank"),
    ("https_proxy=https://x.example.com:1\nqualys_https_proxy=https://q.example.com:2\n", "line 1"),
    ("http_proxy=https://10.0.0.1:8080\n", "expected one line"),
    ("qualys_https_proxy = https://10.0.0.1:8080\n", "expected one line"),
    ("qualys_https_proxy=http://10.0.0.1:8080\n", "proxy 1 is not https://"),
    ("qualys_https_proxy=10.0.0.1:8080\n", "proxy 1 is not https://"),
    ("qualys_https_proxy=https://10.0.0.1:8080/\n", "proxy 1 is not https://"),
    ("qualys_https_proxy=https://10.0.0.1:8080 \n", "proxy 1 is not https://"),
    ("qualys_https_proxy=https://10.0.0.1:8080;https://10.0.0.2:8080\n", "inside double quotes"),
    ('qualys_https_proxy="https://10.0.0.1:8080\n', "stray double quotes"),
    ('qualys_https_proxy="' + ";".join(f"https://10.0.0.{n}" for n in range(1, 7)) + '"\n', "at most 5"),
    ('qualys_https_proxy="https://10.0.0.1;"\n', "proxy 2 is not https://"),
    ("qualys_https_proxy=https://u:p@ss@10.0.0.1:8080\n", "percent-encoded"),
    ("qualys_https_proxy=https://u:p$ss@10.0.0.1:8080\n", "percent-encoded"),
    ("qualys_https_proxy=https://user@10.0.0.1:8080\n", "percent-encoded"),
    ("qualys_https_proxy=https://proxy:8080\n", "neither an IPv4 address nor a fully qualified name"),
    ("qualys_https_proxy=https://300.0.0.1:8080\n", "neither an IPv4"),
    ("qualys_https_proxy=https://10.0.0.1:70000\n", "out of range"),
    ("qualys_https_proxy=https://#bad!:#x@10.0.0.1\n", "percent-encoded"),
    ("qualys_https_proxy=https://#AAAA:%ff@10.0.0.1\n", "not UTF-8"),
    ("export qualys_https_proxy=https://10.0.0.1:8080\n", "needs both"),
    ("export https_proxy=https://10.0.0.1:8080\nexport no_proxy=qualys.com\n", "line 1"),
    ("export qualys_https_proxy=https://10.0.0.1\nexport no_proxy=qualys.com\nexport no_proxy=x.com\n", "line 3"),
    ("export qualys_https_proxy=https://10.0.0.1\nexport no_proxy=qualys .com\n", "no_proxy must be"),
])
def test_proxy_file_errors_name_the_reason(text, reason):
    with pytest.raises(proxyfile.ProxyConfigError, match=re.escape(reason)):
        proxyfile.parse_proxy_file(text)


def test_proxy_file_must_be_root_660(tmp_path):
    path = tmp_path / "proxy"
    assert proxyfile.load_proxy_file(str(path)) == ([], [])  # no file: direct
    path.write_text("qualys_https_proxy=https://10.0.0.1:8080\n")
    path.chmod(0o644)
    with pytest.raises(proxyfile.ProxyConfigError, match="owned by root with mode 660"):
        proxyfile.load_proxy_file(str(path))
    path.chmod(0o660)
    if path.stat().st_uid == 0:
        assert proxyfile.load_proxy_file(str(path)) == ([P], [])
    else:
        with pytest.raises(proxyfile.ProxyConfigError, match="found uid"):
            proxyfile.load_proxy_file(str(path))


def test_credentials_are_percent_decoded_or_string_util_decoded():
    assert proxyfile.credential("p%40ss%3Aw%24rd%3B") == "p@ss:w$rd;"
    secret = "p@ss:w$rd; with spaces and ünïcode"
    encrypted = "#" + stringutil.encode(quote(secret, safe=""))  # percent-encoded, then encrypted
    assert proxyfile.credential(encrypted) == secret
    assert proxyfile.credential("#" + stringutil.encode("p@ss:w$rd;")) == "p@ss:w$rd;"  # nothing to decode
    url = f"qualys_https_proxy=https://#{stringutil.encode('ops%40lab%3B2')}:{encrypted}@10.0.0.1:3128"
    assert proxyfile.parse_proxy_file(url) == ([proxy("10.0.0.1", 3128, "ops@lab;2", secret)], [])


def test_no_proxy_matching():
    assert proxyfile.bypass("qagpublic.qg1.fleetlab.test", ["fleetlab.test"])
    assert proxyfile.bypass("fleetlab.test", [".fleetlab.test"])
    assert not proxyfile.bypass("evilfleetlab.test", ["fleetlab.test"])


def test_string_util_prints_bare_url_safe_text(monkeypatch, capsys):
    encoded = stringutil.encode("p@ss:w$rd;")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", encoded) and not encoded.startswith("#")
    assert stringutil.decode(encoded) == "p@ss:w$rd;"
    assert encoded != stringutil.encode("p@ss:w$rd:")
    monkeypatch.setattr(stringutil.os, "geteuid", lambda: 0)
    monkeypatch.setattr(stringutil, "_count", lambda: None)
    assert stringutil.main(["p@ss:w$rd;"]) == 0
    assert capsys.readouterr().out == encoded + "\n"
    assert stringutil.main(["a", "b"]) == 1 and stringutil.main([]) == 1
    assert capsys.readouterr().err == 'Usage: string-util "<text>"\n' * 2
    monkeypatch.setattr(stringutil.os, "geteuid", lambda: 501)
    assert stringutil.main(["x"]) == 1 and "root" in capsys.readouterr().err


@pytest.mark.parametrize("arch", pkgbuild.ARCHES)
def test_payload_has_exactly_one_standalone_string_util(tmp_path, arch):
    pkg = pkgbuild.build(tmp_path / "a.pkg", "6.1.0.20", arch, size_mb=1)
    with open(pkg, "rb") as f:
        payload = gzip.decompress(xar.Reader(f).read("QualysCloudAgent.pkg/Payload"))
    entries = {name: (mode, data) for name, mode, data in cpio.read(io.BytesIO(payload))}
    found = [name for name in entries if name.rsplit("/", 1)[-1] == "string-util"]
    assert found == ["./Applications/QualysCloudAgent.app/Contents/MacOS/string-util"]
    mode, data = entries[found[0]]
    assert mode == 0o100755 and data.startswith(b"#!/usr/bin/python3")
    assert data == Path(stringutil.__file__).read_bytes()  # needs nothing else from the package


def _imported_from(directory: Path, module: str) -> set[str]:
    """The modules of DIRECTORY that importing MODULE loads, with python3 -S as on a Mac (and
    -I: nothing from here, such as fleetctl, can fill a gap)."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import " + module + "; "
             "print(*sorted(n for n, m in sys.modules.items() if (getattr(m, '__file__', '') or '')"
             ".startswith(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(directory)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_payload_resources_hold_every_module_the_agent_imports(tmp_path):
    pkg = pkgbuild.build(tmp_path / "a.pkg", "6.1.0.20", "arm64", size_mb=1)
    with open(pkg, "rb") as f:
        cpio.extract(io.BytesIO(gzip.decompress(xar.Reader(f).read("QualysCloudAgent.pkg/Payload"))),
                     str(tmp_path / "root"))
    shipped = tmp_path / "root" / pkgbuild.APP / "Resources"
    assert _imported_from(shipped, "qagent") == {p.stem for p in shipped.glob("*.py")}  # all needed, all used


def test_lab_copies_every_module_the_shims_import(tmp_path):
    lib = hosts.write_macbin(tmp_path) / ".lib"
    assert _imported_from(lib, "macshim") == {"macshim", "shimcommon", "launchd", "logshow"}
    assert {"xar.py", "cpio.py"} <= {p.name for p in lib.iterdir()}  # imported by `installer` when it runs


def test_log_lines_have_the_documented_format_and_syslog_records_the_bare_message():
    line = agentcommon.log_line("Information", "Service stopping", 1714000000.474, 9710, 140048573286144)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.474 \[qualys-cloud-agent\]\[9710\]:\[Information\]:"
                        r"\[140048573286144\]:Service stopping\n", line)
    record = agentcommon.unified_record("Warning", "Proxy 10.0.0.1:443 failed: timed out", 1.5, 7, 8)
    assert record["message"] == "Proxy 10.0.0.1:443 failed: timed out" and record["priority"] == 4
    levels = {level: logshow.message_type(agentcommon.SYSLOG_PRIORITY[level]) for level in agentcommon.LEVELS}
    assert levels == {"Fatal": "Fault", "Error": "Error", "Warning": "Default", "Information": "Info",
                      "Debug": "Debug", "Trace": "Debug"}


def _logged_messages() -> set[tuple[str, str]]:
    """(level, message template) of every log() call in the agent's modules; '{}' where a value goes."""
    def text(node) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v) if isinstance(v, ast.Constant) else "{}" for v in node.values)
        if isinstance(node, ast.BinOp):
            return text(node.left) + "{}"
        return f"<{node.id}>"  # a name: checked on its own below

    trees = [ast.parse(path.read_text()) for path in Path(agentcommon.__file__).parent.glob("*.py")]
    nodes = [n for tree in trees for n in ast.walk(tree)]
    calls = [n for n in nodes if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "log"]
    return {(text(c.args[0]), text(c.args[1])) for c in calls}


def test_the_agent_says_only_documented_or_neutral_things():
    assert _logged_messages() == {
        # quoted by the guide
        ("Information", "OnDemandRequest Params: ControlID={}, Action=OnDemand, Type={}, CPUThrottle={}"),
        ("Information", "Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN"),
        ("Information", "OnDemand request for Control ID : {} will be delayed."),
        # neutral
        ("Information", "Heartbeat acknowledged by platform {} (proxy: {})"),
        ("Information", "Scan results uploaded for ControlID={}"),
        ("Warning", "Proxy {} failed: {}"),
        ("Error", "Platform communication failed: {}"),
        ("Error", "Proxy configuration invalid: {}"),
        ("Information", "Service starting, version {}"),
        ("Information", "Service stopping"),
        ("Information", "Options received: {}"),
        ("Debug", "Option values: {}"),
        # personas
        ("Fatal", "Unhandled exception in scan engine: Segmentation fault (signal 11); agent exiting"),
        ("Error", "<LOG_ERRORS_LINE>"),
        ("<level>", "<message>"),  # CHATTY_LINES
    }
    assert agentdaemon.LOG_ERRORS_LINE == "Data collection failed for module INV: command timed out"


def test_chatty_lines_use_alarming_words_at_harmless_levels():
    levels = {level for level, _ in agentdaemon.CHATTY_LINES}
    assert levels <= {"Information", "Debug", "Trace"} and {"Information", "Debug"} <= levels
    text = " ".join(message for _, message in agentdaemon.CHATTY_LINES)
    for word in ("error", "failed", "Fatal", "ERROR:", "[Error]"):
        assert word in text


def test_pod_keeps_a_hostid_and_assigns_one_on_first_contact():
    assert pod.assign_hostid({"hostid": "abc"}) == "abc"
    new = pod.assign_hostid({"hostid": ""})
    assert re.fullmatch(r"[0-9a-f-]{36}", new) and new != pod.assign_hostid({})


RECORDS = [
    {"time": 1000.0, "priority": 6, "message": "Heartbeat acknowledged by platform p (proxy: none)", "pid": 5,
     "tid": 77, "process": "qualys-cloud-agent", "image": agentcommon.DAEMON},
    {"time": 2000.0, "priority": 7, "message": "Option values: LogLevel=4", "pid": 6, "tid": 78,
     "process": "qualys-cloud-agent", "image": agentcommon.DAEMON},
    {"time": 3000.0, "priority": 3, "message": "Platform communication failed: x", "pid": 5, "tid": 77,
     "process": "qualys-cloud-agent", "image": agentcommon.DAEMON},
]


@pytest.mark.parametrize("args, messages", [
    ([], ["Platform communication failed: x"]),
    (["--info"], ["Heartbeat acknowledged by platform p (proxy: none)", "Platform communication failed: x"]),
    (["--debug"], ["Option values: LogLevel=4", "Platform communication failed: x"]),
    (["--info", "--debug", "--last", "30m"], ["Option values: LogLevel=4", "Platform communication failed: x"]),
    (["--info", "--predicate", 'process == "qualys-cloud-agent" AND eventMessage CONTAINS[c] "HEARTBEAT"'],
     ["Heartbeat acknowledged by platform p (proxy: none)"]),
    (["--info", "--predicate", 'process == "sshd"'], []),
    (["--info", "--debug", "--start", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(2700))],
     ["Platform communication failed: x"]),
])
def test_log_show_selects_like_macos(args, messages):
    opts = logshow.parse_show_args(args)
    assert [e["eventMessage"] for e in logshow.select_events(opts, RECORDS, now=3000.0)] == messages


def test_log_show_ndjson_is_one_object_a_line_then_the_count():
    opts = logshow.parse_show_args(["--style", "ndjson", "--info"])
    lines = logshow.render(opts, logshow.select_events(opts, RECORDS, now=3000.0)).splitlines()
    assert lines[-1] == '{"count":2,"finished":1}' and len(lines) == 3
    first = json.loads(lines[0])
    assert first["messageType"] == "Info" and first["eventType"] == "logEvent" and first["processID"] == 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.000000[+-]\d{4}", first["timestamp"])
    assert {"subsystem", "category", "threadID", "processImagePath", "eventMessage"} <= first.keys()


@pytest.mark.parametrize("args, says", [
    (["--bogus"], "unrecognized option `--bogus'"), (["--style", "xml"], "invalid style"),
    (["--info", "--style"], "unrecognized option `--style'"),
])
def test_log_show_refuses_unknown_options(args, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        logshow.parse_show_args(args)


@pytest.mark.parametrize("key, good, bad", [
    ("ActivationId", "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11", "4b2ea2a4"),
    ("ServerUri", "https://qagpublic.qg2.apps.qualys.com/CloudAgent", "https://qagpublic.qg2.apps.qualys.com/"),
    ("LogLevel", "5", "6"), ("LogDestType", "syslog", "console"), ("UseSudo", "1", "yes"),
    ("User", "root", "no-such-user-here"), ("Group", "root", "no-such-group-here"),
    ("ProcessPriority", "-20", "-21"), ("QualysProxyOrder", "seq", "first"),
    ("CmdMaxTimeOut", "1800", "0"), ("HostIdSearchDir", "/etc/", "etc"),
])
def test_option_validation(key, good, bad):
    configtool.validate(key, good)
    with pytest.raises(agentcommon.Invalid, match=key):
        configtool.validate(key, bad)
