"""A simulated Mac's hardware as macOS shows it: `ioreg -rd1 -c IOPlatformExpertDevice`, the
Hardware Overview of `system_profiler SPHardwareDataType`, and the model behind `sysctl hw.model`.

The serial number, hardware UUID and port addresses come from host.json (the lab derives them
from its seed, lab/identity.py). Wired Macs are Mac minis (Ethernet en0, Wi-Fi en1), Wi-Fi-only
ones MacBook Pros. Shapes follow real output (spec: "Laptops, identity and waking"): ioreg's
`+-o NAME  <class ...>` line, then `    {`, each property as `      "key" = value`, `    }` and a
line of four spaces. Stdlib only and cheap: imported by macshim.py for every shim call.
"""
import sys

from shimcommon import facts, fail

# (arch, laptop) -> the model: what system_profiler, ioreg and sysctl agree on
MODELS = {
    ("arm64", False): {"name": "Mac mini", "id": "Mac14,12", "number": "MNH73LL/A", "node": "J474sAP",
                       "target": "J474s", "regulatory": "A2816", "ncpu": 10,
                       "cpu": ["Chip: Apple M2 Pro", "Total Number of Cores: 10 (6 performance and 4 efficiency)"]},
    ("arm64", True): {"name": "MacBook Pro", "id": "Mac14,9", "number": "MPHH3LL/A", "node": "J414sAP",
                      "target": "J414s", "regulatory": "A2779", "ncpu": 10,
                      "cpu": ["Chip: Apple M2 Pro", "Total Number of Cores: 10 (6 performance and 4 efficiency)"]},
    ("x86_64", False): {"name": "Mac mini", "id": "Macmini8,1", "board": "Mac-7BA5B2DFE22DDD8C", "ncpu": 12,
                        "cpu": ["Processor Name: 6-Core Intel Core i7", "Processor Speed: 3.2 GHz",
                                "Number of Processors: 1", "Total Number of Cores: 6", "L2 Cache (per Core): 256 KB",
                                "L3 Cache: 12 MB", "Hyper-Threading Technology: Enabled"]},
    ("x86_64", True): {"name": "MacBook Pro", "id": "MacBookPro16,1", "board": "Mac-E1008331FDC96864", "ncpu": 16,
                       "cpu": ["Processor Name: 8-Core Intel Core i9", "Processor Speed: 2.3 GHz",
                               "Number of Processors: 1", "Total Number of Cores: 8", "L2 Cache (per Core): 256 KB",
                               "L3 Cache: 16 MB", "Hyper-Threading Technology: Enabled"]},
}
# macOS major -> (Apple silicon firmware and OS loader, Intel firmware, Intel OS loader)
FIRMWARE = {
    "12": ("7459.141.1", "1916.140.6.0.0 (iBridge: 20.16.6071.0.0,0)", "540.120.3~37"),
    "13": ("8422.141.2", "2022.140.5.0.0 (iBridge: 21.16.6074.0.0,0)", "564.40.4~66"),
    "14": ("10151.121.1", "2069.40.2.0.0 (iBridge: 22.16.10353.0.0,0)", "577~129"),
    "15": ("11881.41.5", "2075.40.2.0.0 (iBridge: 22.16.10353.0.0,0)", "580~1678"),
}
IOREG_USAGE = "usage: ioreg [-abfilrtxy] [-c class] [-d depth] [-k key] [-n name] [-p plane] [-w width]"


def model(f: dict) -> dict:
    return MODELS[(f["arch"], f.get("laptop", False))]


def hardware_overview(f: dict) -> list:
    """system_profiler SPHardwareDataType, line by line (a blank line ends the section)."""
    m = model(f)
    memory = f"{f['memsize'] >> 30} GB" if f["memsize"] >= 1 << 30 else f"{f['memsize'] >> 20} MB"
    silicon, intel, loader = FIRMWARE[f["product_version"].split(".")[0]]
    lines = [f"Model Name: {m['name']}", f"Model Identifier: {m['id']}"]
    if f["arch"] == "arm64":
        lines += [f"Model Number: {m['number']}", *m["cpu"], f"Memory: {memory}",
                  f"System Firmware Version: {silicon}", f"OS Loader Version: {silicon}"]
    else:
        lines += [*m["cpu"], f"Memory: {memory}", f"System Firmware Version: {intel}", f"OS Loader Version: {loader}"]
    udid = f["provisioning_udid"] if f["arch"] == "arm64" else f["hardware_uuid"]
    lines += [f"Serial Number (system): {f['serial']}", f"Hardware UUID: {f['hardware_uuid']}",
              f"Provisioning UDID: {udid}", "Activation Lock Status: Disabled"]
    return ["Hardware:", "", "    Hardware Overview:", "", *("      " + line for line in lines), ""]


def _padded(text: str, size: int = 32) -> bytes:
    return text.encode().ljust(size, b"\0")


def _strings(*texts: str) -> bytes:
    """NUL-terminated strings, as the device tree stores them (ioreg shows <"a","b">)."""
    return b"".join(t.encode() + b"\0" for t in texts)


def platform_properties(f: dict) -> tuple:
    """(registry entry name, [(key, value)]) of IOPlatformExpertDevice; str, bytes, or a list of them."""
    m = model(f)
    serial, uuid = f["serial"], f["hardware_uuid"]
    if f["arch"] == "arm64":
        return m["node"], [
            ("IOPolledInterface", "AppleARMWatchdogTimerHibernateHandler is not serializable"),
            ("#address-cells", b"\x02\0\0\0"), ("AAPL,phandle", b"\x01\0\0\0"),
            ("serial-number", _padded(serial)), ("IOBusyInterest", "IOCommand is not serializable"),
            ("target-type", _strings(m["target"])), ("platform-name", _padded("t6020")),
            ("secure-root-prefix", _strings("md")), ("name", _strings("device-tree")),
            ("region-info", _padded("LL/A")), ("manufacturer", _strings("Apple Inc.")),
            ("compatible", _strings(m["node"], m["id"], "AppleARM")), ("config-number", bytes(64)),
            ("IOPlatformSerialNumber", serial), ("regulatory-model-number", _padded(m["regulatory"])),
            ("time-stamp", _strings("Thu Sep 19 21:52:19 PDT 2024")), ("clock-frequency", b"\x00\x36\x6e\x01"),
            ("model", _strings(m["id"])), ("mlb-serial-number", _padded(serial[:3] + "3" + serial[3:] + "1")),
            ("model-number", _padded(m["number"][:5])), ("IONWInterrupts", "IONWInterrupts"),
            ("device_type", _strings("bootrom")), ("#size-cells", b"\x02\0\0\0"), ("IOPlatformUUID", uuid),
        ]
    return m["id"], [
        ("IOPolledInterface", "SMCPolledInterface is not serializable"), ("compatible", _strings(m["id"])),
        ("version", _strings("1.0")), ("board-id", _strings(m["board"])),
        ("IOInterruptSpecifiers", [bytes.fromhex("0900000005000000")]),
        ("platform-feature", bytes.fromhex("0200000000000000")),
        ("serial-number", serial[-4:].encode().ljust(13, b"\0") + serial.encode().ljust(30, b"\0")),
        ("IOInterruptControllers", ["io-apic-0"]), ("IOPlatformUUID", uuid), ("target-type", _strings("Mac")),
        ("clock-frequency", b"\x00\x84\xd7\x17"), ("manufacturer", _strings("Apple Inc.")),
        ("IOPlatformSerialNumber", serial), ("IOConsoleSecurityInterest", "IOCommand is not serializable"),
        ("product-name", _strings(m["id"])), ("model", _strings(m["id"])), ("name", _strings("/")),
        ("IOBusyInterest", "IOCommand is not serializable"), ("system-type", b"\x02"),
    ]


def _show(value) -> str:
    """A property value as ioreg prints it: "text", <"c","strings">, <hex>, (list)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "(" + ",".join(_show(v) for v in value) + ")"
    parts = value[:-1].split(b"\0") if value.endswith(b"\0") else []
    if parts and all(p and all(32 <= c < 127 and c != 34 for c in p) for p in parts):
        return "<" + ",".join(f'"{p.decode()}"' for p in parts) + ">"
    return "<" + value.hex() + ">"


def _archive(name: str, props: list) -> None:
    import plistlib

    entry = {"IOObjectClass": "IOPlatformExpertDevice", "IORegistryEntryName": name, **dict(props)}
    sys.stdout.write(plistlib.dumps([entry]).decode())


def ioreg(args: list) -> None:
    """`ioreg [-r] [-d N] [-c class] [-l] [-w N] [-a]`: the platform expert device is the only
    object this Mac's registry answers for; any other class prints nothing, as for no match."""
    opts, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or len(arg) < 2:
            fail(IOREG_USAGE)
        j = 1
        while j < len(arg):
            flag = arg[j]
            if flag in "cdknpw":
                value = arg[j + 1:] or (args[i + 1] if i + 1 < len(args) else None)
                if value is None:
                    fail(f"ioreg: option requires an argument -- {flag}\n{IOREG_USAGE}")
                if not arg[j + 1:]:
                    i += 1
                opts[flag] = value
                break
            if flag not in "abfilrtxy":
                fail(f"ioreg: illegal option -- {flag}\n{IOREG_USAGE}")
            opts[flag] = True
            j += 1
        i += 1
    if opts.get("c", "IOPlatformExpertDevice") != "IOPlatformExpertDevice":
        return
    name, props = platform_properties(facts())
    if "a" in opts:
        _archive(name, props)
        return
    head = f"{name}  <class IOPlatformExpertDevice, id 0x100000116, registered, matched, active, busy 0 (1042 ms), " \
           "retain 41>"
    if "r" in opts:
        lines, pad = ["+-o " + head], "    "
    else:  # the tree from the root: the device is a child, and has children of its own
        lines, pad = ["+-o Root  <class IORegistryEntry, id 0x100000100, retain 29>", "  +-o " + head], "    | "
    if "c" in opts or "l" in opts:
        lines += [pad + "{", *(f'{pad}  "{k}" = {_show(v)}' for k, v in props), pad + "}", pad]
    print("\n".join(lines))
