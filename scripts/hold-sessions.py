#!/usr/bin/env python3
"""Log N iSCSI sessions in to a target and keep them idle (for memory measurements).

    hold-sessions.py HOST PORT TARGET_IQN N SECONDS

Each session logs in with one Login PDU in the operational stage (no authentication), as
open-iscsi does, answers the target's NOP-In pings, and sends no commands.
"""

import select
import socket
import struct
import sys
import time


def login_pdu(initiator, target, isid_tail):
    keys = [
        ("InitiatorName", initiator), ("TargetName", target), ("SessionType", "Normal"),
        ("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "262144"),
    ]
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys)
    pad = (-len(data)) % 4
    bhs = bytearray(48)
    bhs[0] = 0x43  # Login Request, immediate
    bhs[1] = 0x87  # T, CSG 1, NSG 3
    bhs[5:8] = len(data).to_bytes(3, "big")
    bhs[8:14] = bytes([0x80, 0x00, 0x00, 0x00, (isid_tail >> 8) & 0xFF, isid_tail & 0xFF])
    struct.pack_into(">I", bhs, 16, 1)  # ITT
    return bytes(bhs) + data + b"\0" * pad


def main():
    host, port, target, n, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    socks = []
    for k in range(n):
        s = socket.create_connection((host, port))
        s.sendall(login_pdu(f"iqn.2026-11.bench:idle{k}", target, k))
        hdr = s.recv(48, socket.MSG_WAITALL)
        if len(hdr) < 48 or hdr[0] & 0x3F != 0x23 or hdr[36] != 0:
            sys.exit(f"session {k}: login failed")
        dlen = int.from_bytes(hdr[5:8], "big")
        s.recv((dlen + 3) // 4 * 4, socket.MSG_WAITALL)
        socks.append(s)
    print(f"{n} sessions logged in", flush=True)
    end = time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            hdr = s.recv(48, socket.MSG_WAITALL)
            if len(hdr) < 48:
                continue
            dlen = int.from_bytes(hdr[5:8], "big")
            data = s.recv((dlen + 3) // 4 * 4, socket.MSG_WAITALL) if dlen else b""
            if hdr[0] & 0x3F == 0x20:  # NOP-In: answer a ping (TTT set)
                ttt = hdr[20:24]
                if ttt != b"\xff\xff\xff\xff":
                    out = bytearray(48)
                    out[0] = 0x40 | 0x00  # NOP-Out, immediate
                    out[1] = 0x80
                    out[16:20] = b"\xff\xff\xff\xff"
                    out[20:24] = ttt
                    s.sendall(bytes(out))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
