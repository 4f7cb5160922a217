#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into fuzz/seeds/<target>/.

The seeds are committed; run this again only to change them. The PDU and login seeds come
from the golden PDUs in tests/fixtures/pdus/*.hex, wrapped in each target's input format
(see the comment at the top of each fuzz_targets/*.rs).
"""

import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GOLDEN = sorted((ROOT / "tests" / "fixtures" / "pdus").glob("*.hex"))


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def pad(b: bytes) -> bytes:
    return b + b"\0" * ((4 - len(b) % 4) % 4)


def pdu(bhs: bytes, ahs: bytes = b"", data: bytes = b"", hd=False, dd=False) -> bytes:
    """Frame a PDU: fill TotalAHSLength and DataSegmentLength, add padding and digests."""
    assert len(bhs) == 48 and len(ahs) % 4 == 0
    b = bytearray(bhs)
    b[4] = len(ahs) // 4
    b[5:8] = len(data).to_bytes(3, "big")
    header = bytes(b) + ahs
    out = header
    if hd:
        out += struct.pack("<I", crc32c(header))
    if data:
        out += pad(data)
        if dd:
            out += struct.pack("<I", crc32c(pad(data)))
    return out


def split_golden(wire: bytes):
    dsl = int.from_bytes(wire[5:8], "big")
    return wire[:48], wire[48 : 48 + dsl]


def write(target: str, name: str, data: bytes) -> None:
    d = HERE / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def golden():
    for path in GOLDEN:
        wire = bytes.fromhex(path.read_text().strip())
        yield path.stem, wire


def bhs(opcode: int, flags: int = 0, rest: bytes = b"") -> bytes:
    b = bytes([opcode, flags, 0, 0, 0, 0, 0, 0]) + rest
    return (b + b"\0" * 48)[:48]


def pdu_seeds():
    goldens = list(golden())
    for name, wire in goldens:
        h, data = split_golden(wire)
        # cfg: bits 2-4 = 4 selects 8192-byte data segments, no digests.
        write("pdu_decode", f"{name}", bytes([0x10]) + wire)
        write("pdu_decode", f"{name}-digests", bytes([0x13]) + pdu(h, b"", data, True, True))
        write("pdu_decode", f"{name}-header-digest-pieces", bytes([0xF1]) + pdu(h, b"", data, True, False))
    write("pdu_decode", "all-golden-in-one-stream", bytes([0x10]) + b"".join(w for _, w in goldens))
    # SCSI Command with an extended CDB (32-byte CDB: 16 in the BHS, 16 in an AHS) and a
    # bidirectional read length, then a Data-Out and a NOP-Out.
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 0x18]) + bytes(24)
    ext = pad(struct.pack(">HBB", 17, 1, 0) + cdb[16:])
    bidi = struct.pack(">HBBI", 5, 2, 0, 4096)
    cmd = bhs(0x01, 0xE1, bytes(8) + struct.pack(">IIII", 1, 512, 1, 1) + cdb[:16])
    dout = bhs(0x05, 0x80, bytes(8) + struct.pack(">IIIIII", 1, 0xFFFFFFFF, 0, 1, 0, 0))
    nop = bhs(0x40, 0x80, bytes(8) + struct.pack(">II", 2, 0xFFFFFFFF))
    stream = pdu(cmd, ext + bidi) + pdu(dout, b"", bytes(512)) + pdu(nop, b"", b"ping")
    write("pdu_decode", "scsi-command-extended-cdb", bytes([0x10]) + stream)
    write("pdu_decode", "scsi-command-digests", bytes([0x1F]) + b"\x00\x02\x00"
          + pdu(cmd, ext, b"", True, True) + pdu(dout, b"", bytes(512), True, True))
    # Target PDUs: Login Response, SCSI Response with sense, Reject, R2T, Text Response.
    resp = bhs(0x23, 0x87, bytes(8) + struct.pack(">IIIII", 1, 0, 1, 1, 64))
    sense = bytes([0, 18, 0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])
    scsi_resp = bhs(0x21, 0x80, bytes([0, 2]) + bytes(6) + struct.pack(">I", 1))
    reject = bhs(0x3F, 0x80, bytes([9]) + bytes(7) + struct.pack(">I", 0xFFFFFFFF))
    r2t = bhs(0x31, 0x80, bytes(8) + struct.pack(">IIIIIIII", 1, 5, 1, 2, 3, 0, 0, 512))
    text = bhs(0x24, 0x80, bytes(8) + struct.pack(">II", 3, 0xFFFFFFFF))
    stream = (pdu(resp, b"", b"TargetPortalGroupTag=1\0")
              + pdu(scsi_resp, b"", sense)
              + pdu(reject, b"", bytes(48))
              + pdu(r2t)
              + pdu(text, b"", b"TargetName=iqn.2026-11.io.ironlun:a\0TargetAddress=127.0.0.1:3260,1\0"))
    write("pdu_decode", "target-pdus", bytes([0x10]) + stream)


def login_record_raw(wire: bytes) -> bytes:
    return bytes([0]) + struct.pack(">H", len(wire)) + wire


def login_record(flags: int, text: bytes, tag: int = 1) -> bytes:
    return bytes([tag, flags]) + struct.pack(">H", len(text)) + text


def kv(*pairs) -> bytes:
    return b"".join(f"{k}={v}\0".encode() for k, v in pairs)


OPERATIONAL = kv(
    ("HeaderDigest", "None"), ("DataDigest", "None"), ("InitialR2T", "No"),
    ("ImmediateData", "Yes"), ("MaxBurstLength", "262144"), ("FirstBurstLength", "65536"),
    ("MaxRecvDataSegmentLength", "262144"), ("MaxConnections", "1"), ("ErrorRecoveryLevel", "0"),
)
IDENTITY = kv(("InitiatorName", "iqn.2026-11.test:init"),
              ("TargetName", "iqn.2026-11.io.ironlun:default"), ("SessionType", "Normal"))


def flags(transit: bool, cont: bool, csg: int, nsg: int, chap: bool = False) -> int:
    return int(transit) | int(cont) << 1 | csg << 2 | nsg << 4 | int(chap) << 6


def login_seeds():
    wires = dict(golden())
    for name, wire in wires.items():
        for cfg in (0, 1, 2):
            write("login", f"{name}-policy{cfg}", bytes([cfg]) + login_record_raw(wire))
    chap = wires["libiscsi-login-chap"]
    # One-way CHAP: golden security PDU, CHAP_A, the answer, then the operational stage.
    for cfg, name in ((1, "chap-one-way"), (2, "chap-mutual"), (3, "chap-mutual-same-secret")):
        seq = (bytes([cfg]) + login_record_raw(chap)
               + login_record(flags(False, False, 0, 1), kv(("CHAP_A", "7,5")))
               + login_record(flags(True, False, 0, 1, chap=True), b"")
               + login_record(flags(True, False, 1, 3), OPERATIONAL))
        write("login", name, seq)
    # Built only, security stage with AuthMethod=None, then operational in two PDUs (C bit).
    seq = (bytes([0]) + login_record(flags(True, False, 0, 1), IDENTITY + kv(("AuthMethod", "None")))
           + login_record(flags(False, True, 1, 3), OPERATIONAL[:40])
           + login_record(flags(True, False, 1, 3), OPERATIONAL[40:]))
    write("login", "auth-none-continued-text", seq)
    # Discovery with CHAP required for discovery.
    seq = (bytes([0x05]) + login_record(flags(False, False, 0, 1),
                                        kv(("InitiatorName", "iqn.2026-11.test:init"),
                                           ("SessionType", "Discovery"), ("AuthMethod", "CHAP"),
                                           ("CHAP_A", "5")))
           + login_record(flags(True, False, 0, 3, chap=True), b""))
    write("login", "discovery-chap", seq)
    # Straight to full feature phase, with small limits and digests required.
    write("login", "operational-only-digests-required",
          bytes([0x28]) + login_record(flags(True, False, 1, 3), IDENTITY + kv(
              ("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C"),
              ("MaxBurstLength", "512"), ("FirstBurstLength", "65536"))))


def text_seeds():
    for name, wire in golden():
        _, data = split_golden(wire)
        write("text_keys", name, bytes([0]) + data)
        write("text_keys", f"{name}-discovery-refuse", bytes([0x22]) + data)
    write("text_keys", "numbers-and-lists", bytes([0x11]) + kv(
        ("MaxBurstLength", "0x1000"), ("FirstBurstLength", "16777215"), ("MaxOutstandingR2T", "65535"),
        ("DefaultTime2Wait", "3600"), ("HeaderDigest", "CRC32C,None"), ("CHAP_A", "8,7,6,5"),
        ("CHAP_C", "0b3q2+7w=="), ("CHAP_R", "0x0"), ("X-com.example.key", "Yes"),
        ("iSCSIProtocolLevel", "1"), ("TaskReporting", "ResponseFence")))
    write("text_keys", "renegotiated", bytes([0]) + kv(("InitialR2T", "Yes"), ("InitialR2T", "No")))


def cdb_seeds():
    sep = b"\xfeNXT"

    def c(*cmds):
        """Commands with selectors: the first selector is implied (0)."""
        out = b""
        for i, (sel, body) in enumerate(cmds):
            if i == 0:
                assert sel == 0
                out = body
            else:
                out += sep + bytes([sel]) + body
        return out

    blocks = lambda n: bytes(range(256)) * (n * 2)  # n 512-byte blocks
    write("cdb", "inquiry", c((0, bytes([0x12, 0, 0, 0, 96, 0]))))
    write("cdb", "inquiry-vpd", c((0, bytes([0x12, 1, 0x83, 0, 255, 0])), (0x04, bytes([0x12, 1, 0xB0, 0, 255, 0]))))
    write("cdb", "report-luns", c((0, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])), (0x0C, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))))
    write("cdb", "read-capacity", c((0, bytes([0x25] + [0] * 9)), (0x04, bytes([0x9E, 0x10] + [0] * 10 + [0, 32, 0, 0]))))
    write("cdb", "write-read-10", c((0, bytes([0x2A, 0, 0, 0, 0, 1, 0, 0, 2, 0]) + blocks(2)),
                                    (0x00, bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0]))))
    write("cdb", "write-16-split", c((0, bytes([0x8A, 0] + [0] * 7 + [3] + [0, 0, 0, 1, 0, 0]) + blocks(1)),
                                     (0x80, bytes([0x8A, 0] + [0] * 7 + [4] + [0, 0, 0, 2, 0, 0]) + blocks(2))))
    cw = bytes([0x89, 0] + [0] * 7 + [5] + [0, 0, 0] + [1, 0, 0])
    write("cdb", "compare-and-write", c((0, cw + bytes(512) + blocks(1))))
    ws = bytes([0x93, 0x08] + [0] * 7 + [8] + [0, 0, 0, 16, 0, 0])
    write("cdb", "write-same-unmap", c((0, ws + bytes(512)), (0, bytes([0x41, 0, 0, 0, 0, 0, 0, 0, 4, 0]) + blocks(1))))
    unmap_list = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", 2, 4)
    write("cdb", "unmap", c((0, bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]) + unmap_list)))
    # PERSISTENT RESERVE OUT: REGISTER (key 0x1234) for nexus 0, RESERVE (type 1) and
    # READ KEYS / READ RESERVATION, then a conflicting write from nexus 1.
    def pro(sa, typ, key, sa_key, plen=24):
        return bytes([0x5F, sa, typ, 0, 0, 0, 0, 0, plen, 0]) + struct.pack(">QQ", key, sa_key) + bytes(plen - 16)
    write("cdb", "persistent-reservation", c(
        (0, pro(0, 0, 0, 0x1234)),
        (0, pro(1, 1, 0x1234, 0)),
        (0, bytes([0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0])),
        (0, bytes([0x5E, 1, 0, 0, 0, 0, 0, 1, 0, 0])),
        (0x01, bytes([0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0]) + blocks(1)),
        (0x01, pro(0, 0, 0, 0x5678)),
        (0x01, pro(4, 1, 0x5678, 0x1234)),
        (0, bytes([0x5E, 2, 0, 0, 0, 0, 0, 1, 0, 0])),
    ))
    # MODE SENSE(10) of all pages, MODE SELECT(6) of the caching page.
    caching = bytes([0, 0, 0, 0]) + bytes([0x08, 0x12, 0x04] + [0] * 17)
    write("cdb", "mode-sense-select", c((0, bytes([0x5A, 0, 0x3F, 0, 0, 0, 0, 0x10, 0, 0])),
                                        (0, bytes([0x15, 0x10, 0, 0, len(caching), 0]) + caching),
                                        (0, bytes([0x1A, 0, 0x0A, 0, 255, 0]))))
    # EXTENDED COPY (LID1): two NAA identification CSCDs (LUN 0 and LUN 1), one
    # block-to-block segment, then RECEIVE COPY RESULTS (copy status of list 1).
    def cscd(naa_last, block_len):
        naa = bytes([0x30, 0, 0, 0, 0, 0, 0, naa_last])
        desig = (bytes([0x01, 0x03, 0x00, 0x08]) + naa + bytes(20))[:20]
        return bytes([0xE4, 0, 0, 0]) + desig + bytes(4) + struct.pack(">I", block_len)
    tds = cscd(1, 512) + cscd(2, 4096)
    seg = bytes([0x02, 0]) + struct.pack(">HHHHHQQ", 0x18, 0, 1, 0, 8, 0, 1)
    header = bytes([1, 0]) + struct.pack(">H", len(tds)) + bytes(4) + struct.pack(">II", len(seg), 0)
    plist = header + tds + seg
    write("cdb", "extended-copy", c((0, bytes([0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + struct.pack(">I", len(plist)) + bytes([0, 0]) + plist),
                                    (0, bytes([0x84, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))))
    write("cdb", "sanitize-overwrite", c((0, bytes([0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0]) + bytes([1, 0, 0, 4, 0xDE, 0xAD, 0xBE, 0xEF])),
                                         (0, bytes([0x48, 0x82, 0, 0, 0, 0, 0, 0, 0, 0]))))
    write("cdb", "misc", c((0, bytes([0x03, 0, 0, 0, 252, 0])),
                           (0x04, bytes([0x1B, 0, 0, 0, 2, 0])),
                           (0x04, bytes([0x1E, 0, 0, 0, 1, 0])),
                           (0, bytes([0x35] + [0] * 9)),
                           (0, bytes([0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])),
                           (0, bytes([0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])),
                           (0, bytes([0x2F, 0, 0, 0, 0, 0, 0, 0, 8, 0])),
                           (0, bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
                           (0, bytes([0x9E, 0x12] + [0] * 7 + [0] + [0, 0, 1, 0, 0, 0])),
                           (0x08, bytes([0x00] * 6)),
                           (0x0C, bytes([0x12, 0, 0, 0, 36, 0])),
                           (0, bytes([0x16, 0, 0, 0, 0, 0])),
                           (0x01, bytes([0x17, 0, 0, 0, 0, 0]))))


def rsd_seeds():
    xml = ('<INSTANCE CLASSNAME="CIM_ReplicationSettingData">\n'
           '  <PROPERTY NAME="ConsistentPointInTime" TYPE="boolean"><VALUE>TRUE</VALUE></PROPERTY>\n'
           '  <PROPERTY NAME="DesiredCopyMethodology" TYPE="uint16"><VALUE>6</VALUE></PROPERTY>\n'
           '  <PROPERTY NAME="CopyPriority" TYPE="uint16"><VALUE>2</VALUE></PROPERTY>\n'
           '  <PROPERTY NAME="ElementName" TYPE="string"><VALUE>a &amp; b</VALUE></PROPERTY>\n'
           '</INSTANCE>')
    write("rsd", "cim-xml", xml.encode())
    write("rsd", "cim-xml-escaped", xml.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").encode())
    write("rsd", "json-object", json.dumps({"CopyPriority": 1, "ConsistentPointInTime": False,
                                             "Pairing": 3, "UnequalGroupsAction": 2,
                                             "TargetElementSupplier": 2, "ThinProvisioningPolicy": 4,
                                             "OnGroupOrListError": 3, "CopyRecoveryMode": 2,
                                             "ElementName": "x"}).encode())
    write("rsd", "json-string", json.dumps(xml).encode())


def admin_seeds():
    reqs = [
        {"id": 1, "method": "GetVersion"},
        {"id": 2, "method": "CreateVolume", "params": {"ElementName": "v0", "Size": 1048576}},
        {"id": 3, "method": "CreateGroup", "params": {"GroupName": "g0", "Members": ["volume:vol0", "volume:v0"]}},
        {"id": 4, "method": "CreateGroupReplica", "params": {"SourceGroup": "group:g0", "SyncType": 7, "Mode": 2,
                                                            "WaitForCopyState": 6}},
        {"id": 5, "method": "CreateGroupReplica", "params": {"SourceElement": "volume:vol1", "SyncType": 6, "Mode": 3,
                                                            "ReplicationSettingData": {"CopyPriority": 2}}},
        {"id": 6, "method": "ModifyReplicaSynchronization", "params": {"Operation": 22, "Synchronization": "sync:1"}},
        {"id": 7, "method": "EnumerateInstances", "params": {"ClassName": "CIM_StorageSynchronized"}},
        {"id": 8, "method": "ExposeVolume", "params": {"TheElement": "volume:v0", "Target": "iqn.2026-11.io.ironlun:fuzz"}},
        {"id": 9, "method": "GetSupportedOperations", "params": {"ReplicationType": 6}},
        {"id": 10, "method": "GetInstance", "params": {"Ref": "service:replication"}},
    ]
    write("admin_request", "session", "\n".join(json.dumps(r) for r in reqs[:8]).encode())
    for r in reqs:
        write("admin_request", f"req-{r['id']:02}-{r['method']}", json.dumps(r).encode())
    write("admin_request", "split-fracture", b"\n".join(json.dumps(r).encode() for r in [
        {"id": 1, "method": "CreateGroupReplica", "params": {"SourceElement": "volume:vol0", "SyncType": 6, "WaitForCopyState": 6}},
        {"id": 2, "method": "ModifyReplicaSynchronization", "params": {"Operation": 10, "Synchronization": "sync:2"}},
        {"id": 3, "method": "ModifyReplicaSynchronization", "params": {"Operation": 8, "Synchronization": "sync:2", "Force": True}},
        {"id": 4, "method": "GetSupportedCopyStates", "params": {"ReplicationType": 6, "Operation": 9}},
    ]))
    # Structured: generator bytes (see the target's comment).
    write("admin_request", "structured-0", b"!" + bytes(range(0, 64)))
    write("admin_request", "structured-1", b"!" + bytes([0, 5, 0, 7, 7, 3, 1, 7, 2, 0, 4, 2, 6, 7, 12, 3, 1, 2]))


if __name__ == "__main__":
    pdu_seeds()
    login_seeds()
    text_seeds()
    cdb_seeds()
    rsd_seeds()
    admin_seeds()
