"""A simulated Mac's network ports as macOS shows them: `ifconfig`, `networksetup`.

host.json lists the ports (Ethernet, Wi-Fi, Thunderbolt) with their hardware addresses; en0 is
the Mac's one real interface (eth0 in its network namespace, carrying en0's address), so its
inet line and status are read from the kernel, the others are present but inactive, as on a
Mac with one cable (or one Wi-Fi network). Shapes follow real output, trailing spaces included
(`\tether a8:20:66:12:34:56 `). Stdlib only and cheap.
"""
import sys

from shimcommon import facts, fail

REAL = "eth0"  # what en0 is inside the Mac's network namespace
IFCONFIG_USAGE = "usage: ifconfig [-C] [-L] interface address_family [address [dest_address]]\n" \
                 "                [parameters]"
FIXED = {
    "lo0": ["lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384",
            "\toptions=1203<RXCSUM,TXCSUM,TXSTATUS,SW_TIMESTAMP>", "\tinet 127.0.0.1 netmask 0xff000000 ",
            "\tinet6 ::1 prefixlen 128 ", "\tinet6 fe80::1%lo0 prefixlen 64 scopeid 0x1 ",
            "\tnd6 options=201<PERFORMNUD,DAD>"],
    "gif0": ["gif0: flags=8010<POINTOPOINT,MULTICAST> mtu 1280"],
    "stf0": ["stf0: flags=0<> mtu 1280"],
}
INVALID = "** Error: The parameters were not valid."  # networksetup's answer to what it cannot do, exit 4
UP_FLAGS = "flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500"
OPTIONS = {"ethernet": "options=50b<RXCSUM,TXCSUM,VLAN_HWTAGGING,AV,CHANNEL_IO>",
           "wifi": "options=6460<TSO4,TSO6,CHANNEL_IO,PARTIAL_CSUM,ZEROINVERT_CSUM>",
           "thunderbolt": "options=460<TSO4,TSO6,CHANNEL_IO>", "bridge": "options=63<RXCSUM,TXCSUM,TSO4,TSO6>"}


def _kernel_ipv4():
    """(up and running, (address, netmask, broadcast) or None) of the real interface."""
    import fcntl
    import struct
    from _socket import AF_INET, SOCK_DGRAM, inet_ntoa, socket

    s = socket(AF_INET, SOCK_DGRAM)
    try:
        name = struct.pack("256s", REAL.encode())
        flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), 0x8913, name), 16)[0]  # SIOCGIFFLAGS
        running = bool(flags & 0x1) and bool(flags & 0x40)
        try:
            addr = [inet_ntoa(fcntl.ioctl(s.fileno(), req, name)[20:24]) for req in (0x8915, 0x891B, 0x8919)]
        except OSError:  # no address: asleep, or between two DHCP leases
            return running, None
        return running, tuple(addr)
    finally:
        s.close()


def _link_local(f: dict, device: str, scope: int) -> str:
    """A stable link-local address, as macOS's "secured" (RFC 7217) ones look."""
    h = f["hardware_uuid"].replace("-", "").lower()
    groups = ":".join(h[k:k + 4].lstrip("0") or "0" for k in (20, 24, 28, 0))
    return f"\tinet6 fe80::{groups}%{device} prefixlen 64 secured scopeid {scope:#x} "


def _block(f: dict, port: dict, scope: int, live) -> list:
    device, kind = port["device"], port["kind"]
    flags = UP_FLAGS.replace("8863<UP,BROADCAST,SMART,RUNNING,", "8963<UP,BROADCAST,SMART,RUNNING,PROMISC,") \
        if kind == "thunderbolt" else UP_FLAGS
    lines = [f"{device}: {flags}", "\t" + OPTIONS[kind], f"\tether {port['address']} "]
    running, ipv4 = live if device == "en0" else (False, None)
    if ipv4:
        mask = "0x" + "".join(f"{int(o):02x}" for o in ipv4[1].split("."))
        lines += [_link_local(f, device, scope), f"\tinet {ipv4[0]} netmask {mask} broadcast {ipv4[2]}"]
    if kind == "bridge":
        members = [p["device"] for p in f["ports"] if p["kind"] == "thunderbolt"]
        lines += ["\tConfiguration:", "\t\tid 0:0:0:0:0:0 priority 0 hellotime 0 fwddelay 0",
                  "\t\tmaxage 0 holdcnt 0 proto stp maxaddr 100 timeout 1200",
                  "\t\troot id 0:0:0:0:0:0 priority 0 ifcost 0 port 0", "\t\tipfilter disabled flags 0x0"]
        for n, member in enumerate(members):
            lines += [f"\tmember: {member} flags=3<LEARNING,DISCOVER>",
                      f"\t        ifmaxaddr 0 port {scope - len(members) + n} priority 0 path cost 0"]
    if kind != "thunderbolt":
        lines.append("\tnd6 options=201<PERFORMNUD,DAD>")
    media = {"ethernet": "autoselect (1000baseT <full-duplex>)" if running else "autoselect (none)",
             "wifi": "autoselect" if running else "autoselect (<unknown type>)",
             "thunderbolt": "autoselect <full-duplex>", "bridge": "<unknown type>"}[kind]
    return lines + [f"\tmedia: {media}", f"\tstatus: {'active' if running else 'inactive'}"]


def _interfaces(f: dict) -> list:
    """Interface names in the order ifconfig lists them (the bridge after its members)."""
    ports = [p for p in f["ports"] if p["kind"] != "bridge"] + [p for p in f["ports"] if p["kind"] == "bridge"]
    return [*FIXED, *(p["device"] for p in ports)]


def ifconfig(args: list) -> None:
    """`ifconfig`, `ifconfig -a`, `ifconfig -l`, `ifconfig IFACE [ether|inet]`."""
    f = facts()
    names = _interfaces(f)
    if args[:1] == ["-l"]:
        print(" ".join(names))
        return
    if args and args[0].startswith("-") and args[0] != "-a":
        fail(f"ifconfig: illegal option -- {args[0][1:2]}\n{IFCONFIG_USAGE}")
    wanted = names if not args or args[0] == "-a" else [args[0]]
    if wanted[0] not in names:
        fail(f"ifconfig: interface {wanted[0]} does not exist")
    only = args[1] if len(args) > 1 and args[0] != "-a" else None
    if only not in (None, "ether", "inet", "inet6"):
        fail(f"ifconfig: {only}: bad value")
    live = _kernel_ipv4()
    ports = {p["device"]: p for p in f["ports"]}
    out = []
    for name in wanted:
        block = FIXED[name] if name in FIXED else _block(f, ports[name], names.index(name) + 1, live)
        if only:
            block = [block[0], *(l for l in block[1:] if l.startswith(f"\t{only} "))]
        out += block
    sys.stdout.write("\n".join(out) + "\n")


def _port(f: dict, name: str):
    return next((p for p in f["ports"] if name in (p["port"], p["device"])), None)


def networksetup(args: list) -> None:
    """`-listallhardwareports`, `-getmacaddress PORT|DEVICE`, `-listallnetworkservices`."""
    f = facts()
    if args == ["-listallhardwareports"]:
        blocks = [f"\nHardware Port: {p['port']}\nDevice: {p['device']}\nEthernet Address: {p['address']}\n"
                  for p in f["ports"]]
        sys.stdout.write("".join(blocks) + "\nVLAN Configurations\n===================\n")
    elif args[:1] == ["-getmacaddress"] and len(args) == 2:
        port = _port(f, args[1])
        if port is None:
            print(f"Could not find hardware port or device named {args[1]}.")
            fail(INVALID, 4)
        by = f"Device: {port['device']}" if args[1] == port["device"] else f"Hardware Port: {port['port']}"
        print(f"Ethernet Address: {port['address']} ({by})")
    elif args == ["-listallnetworkservices"]:
        print("An asterisk (*) denotes that a network service is disabled.")
        print("\n".join(p["port"] for p in f["ports"] if p["kind"] != "thunderbolt"))
    else:
        fail(INVALID, 4)
