"""Who relays a site's package, who fetches it, and how a failed relay is replaced (relay.py),
without any Mac: the coordination is pure logic, run from threads as the engine does."""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleetctl import relay, render
from fleetctl.errors import UsageError
from fleetctl.sshconfig import Endpoint

SHA = "ab" * 32


def plan(name: str, site: str | None, address: str = "", preferred: str | None = None, lan: str | None = None):
    host = SimpleNamespace(name=name, user="admin")
    endpoint = Endpoint(address or name, 22, "admin", (), 10.0)
    return SimpleNamespace(host=host, site=site, relay=preferred, lan_address=lan, endpoint=endpoint,
                           staged_dir="/private/var/tmp/fleetctl-admin")


def offer(name: str) -> relay.Offer:
    return relay.Offer(name, "198.18.0.10", 22, "admin", "/x/relay-1.pkg", ("ssh-ed25519", "AAAA"), relay.OneTimeKey.new())


def test_sites_need_two_macs_with_addresses():
    plans = [plan("a1", "berlin", "10.0.0.1"), plan("a2", "berlin", "10.0.0.2"), plan("b1", "paris", "10.0.1.1"),
             plan("c1", "oslo", "c1.example.com"), plan("c2", "oslo", "10.0.2.2"), plan("h", None, "10.0.9.9")]
    relays = relay.Relays("run-1", plans)
    assert set(relays.sites) == {"berlin"}  # paris: one Mac; oslo: one Mac with an IP
    assert relays.site(plans[0]).addresses == {"a1": "10.0.0.1", "a2": "10.0.0.2"}
    assert relays.site(plans[5]) is None
    assert "fleetctl_lan_address" in relays.notes["c1"] and set(relays.notes) == {"c1"}


def test_lan_address_overrides_the_ssh_address():
    relays = relay.Relays("r", [plan("a1", "s", "a1.example.com", lan="10.0.0.1"), plan("a2", "s", "10.0.0.2")])
    assert relays.sites["s"].addresses == {"a1": "10.0.0.1", "a2": "10.0.0.2"}


def test_the_named_relay_starts_first():
    plans = [plan("a1", "s", "10.0.0.1"), plan("h", None, "10.9.9.9"), plan("a2", "s", "10.0.0.2", preferred="a3"),
             plan("a3", "s", "10.0.0.3")]
    assert relay.Relays("r", plans).order(plans) == [3, 0, 1, 2]


def test_first_claim_relays_the_others_fetch_what_it_offers():
    site = relay.Site("s", {"a": "1", "b": "2", "c": "3"}, None)
    assert site.claim("a", SHA) == ("relay", None)
    got = {}
    waiter = threading.Thread(target=lambda: got.update(b=site.claim("b", SHA, wait_s=10)))
    waiter.start()
    site.offered(SHA, offer("a"))
    waiter.join(10)
    assert got["b"][0] == "fetch" and got["b"][1].relay == "a"


def test_a_failed_relay_is_replaced_then_everyone_goes_direct():
    site = relay.Site("s", {n: str(i) for i, n in enumerate("abcdef")}, None)
    assert site.claim("a", SHA)[0] == "relay"
    site.offered(SHA, offer("a"))
    site.failed(SHA, "a")  # e.g. killed mid-transfer, or its copy did not match
    assert site.claim("b", SHA) == ("relay", None)  # the Mac that noticed takes over
    site.left("b")  # b's own upload failed before it could offer
    assert site.claim("c", SHA) == ("relay", None)
    site.failed(SHA, "c")
    assert site.claim("d", SHA) == ("direct", None)  # three relays failed: no more tries
    assert site.packages[SHA].failed == ["a", "b", "c"]


def test_waits_for_the_named_relay_while_it_runs():
    site = relay.Site("s", {"a": "1", "b": "2"}, preferred="a")
    site.started("a")
    assert site.claim("b", SHA, wait_s=0.05) == ("direct", None)  # a has not claimed yet: b waited for it
    site.left("a")
    assert site.claim("b", SHA) == ("relay", None)  # a is gone: b relays


def test_a_named_relay_needing_another_package_is_not_waited_for():
    site = relay.Site("s", {"a": "1", "b": "2"}, preferred="a")
    site.started("a")
    assert site.claim("a", "cd" * 32) == ("relay", None)  # a is an Intel Mac, b Apple silicon
    assert site.claim("b", SHA, wait_s=5) == ("relay", None)


def test_the_relay_entry_is_restricted_to_one_file_and_the_site():
    key = relay.OneTimeKey.new()
    script = render.render("relay_open", sources="10.0.0.2,10.0.0.3", copy="/private/var/tmp/fleetctl-admin/relay-ab.pkg",
                           staged="/private/var/tmp/fleetctl-admin/ab.pkg", sha256=SHA, public_key=key.public,
                           marker=relay.MARKER + "20261126-1")
    entry = next(line for line in script.splitlines() if line.startswith("printf"))
    assert "'restrict,from=\"10.0.0.2,10.0.0.3\",command=\"/bin/cat /private/var/tmp/fleetctl-admin/relay-ab.pkg\" " \
           f"{key.public} fleetctl-relay:20261126-1'" in entry
    assert key.private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and key.public.startswith("ssh-ed25519 ")
    assert key.private not in script  # the relay never holds the private half


def test_site_variables_are_checked_before_any_mac(tmp_path: Path):
    from fleetctl.plan import Planner

    planner = Planner(SimpleNamespace(action="scan"), None)
    host = SimpleNamespace(where="inv.yml:3 (mac-1)")
    assert planner._site(host, {"fleetctl_site": "berlin", "fleetctl_lan_address": "10.0.0.1"}) == \
        ("berlin", None, "10.0.0.1")
    for bad, fix in [({"fleetctl_site": "a b"}, "e.g. berlin"), ({"fleetctl_relay": "$(x)"}, "e.g. mac-012"),
                     ({"fleetctl_lan_address": "mac.local"}, "IP address")]:
        with pytest.raises(UsageError, match=fix) as e:
            planner._site(host, bad)
        assert "inv.yml:3" in str(e.value)
