#!/usr/bin/env python3
"""faultfs: a FUSE pass-through file system that fails I/O on demand, for ironlun's disk
fault tests. Real errors from the kernel's point of view: the server sees EIO or ENOSPC
from pread/pwrite/fsync exactly as from a failing disk.

    faultfs.py BACKING_DIR MOUNTPOINT CONTROL_FILE

CONTROL_FILE holds one rule per line, re-read whenever it changes:
    eio read NAME      reads of file NAME fail with EIO
    eio write NAME     writes (and fsync) of NAME fail with EIO
    enospc write NAME  writes of NAME fail with ENOSPC
NAME is a file name inside the mount, or * for every file. An empty file: no faults.
Mounted with direct_io, so every read and write reaches this process (and its errors
reach the caller at once, not at some later writeback).
"""

import errno
import os
import sys
import threading

try:  # Debian's python3-fusepy
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:  # fusepy from PyPI
    from fuse import FUSE, FuseOSError, Operations


class FaultFs(Operations):
    def __init__(self, root, control):
        self.root = os.path.realpath(root)
        self.control = control
        self.rules = []
        self.stamp = None
        self.guard = threading.Lock()

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _refresh(self):
        try:
            st = os.stat(self.control)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self.stamp:
            return
        rules = []
        if stamp is not None:
            with open(self.control) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3:
                        rules.append(tuple(parts))
        self.rules, self.stamp = rules, stamp

    def _fault(self, op, path):
        with self.guard:
            self._refresh()
            name = os.path.basename(path)
            for kind, rop, rname in self.rules:
                if rop == op and rname in (name, "*"):
                    raise FuseOSError(errno.EIO if kind == "eio" else errno.ENOSPC)

    # Metadata.
    def access(self, path, mode):
        if not os.access(self._path(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid", "st_blocks")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._path(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._path(path), times)

    def mkdir(self, path, mode):
        os.mkdir(self._path(path), mode)

    def rmdir(self, path):
        os.rmdir(self._path(path))

    def unlink(self, path):
        os.unlink(self._path(path))

    def rename(self, old, new):
        os.rename(self._path(old), self._path(new))

    def truncate(self, path, length, fh=None):
        self._fault("write", path)
        with open(self._path(path), "r+") as f:
            f.truncate(length)

    # Data.
    def open(self, path, flags):
        return os.open(self._path(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT, mode)

    def read(self, path, length, offset, fh):
        self._fault("read", path)
        return os.pread(fh, length, offset)

    def write(self, path, data, offset, fh):
        self._fault("write", path)
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        self._fault("write", path)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0


def main():
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        sys.exit(2)
    root, mountpoint, control = sys.argv[1:]
    FUSE(FaultFs(root, control), mountpoint, foreground=True, nothreads=False, direct_io=True, allow_other=False)


if __name__ == "__main__":
    main()
