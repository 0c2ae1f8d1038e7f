"""Fetch the built OHIF viewer (npm's @ohif/app ships it in dist/) for the viewer test.

``python -m tests.fetch_ohif`` (``make viewer``) puts it in ``.cache/ohif-<version>/dist``;
the tarball's sha512 must match the registry's published integrity, pinned here. npm is
used when present (it honours the machine's registry settings), else the public
registry is read directly. Nothing is installed and no OHIF code is committed.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "3.13.2"
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
URL = f"https://registry.npmjs.org/@ohif/app/-/app-{VERSION}.tgz"
REPO = Path(__file__).resolve().parents[1]
DIST = REPO / ".cache" / f"ohif-{VERSION}" / "dist"


def _download(folder: Path) -> Path:
    if shutil.which("npm"):
        subprocess.run(["npm", "pack", f"@ohif/app@{VERSION}", "--pack-destination", str(folder), "--silent"],
                       check=True, capture_output=True, timeout=600)
        return next(folder.glob("*.tgz"))
    path = folder / f"app-{VERSION}.tgz"
    with urllib.request.urlopen(URL, timeout=600) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)
    return path


def fetch() -> Path:
    """The OHIF dist folder, fetched and checked if not already there."""
    if (DIST / "index.html").exists():
        return DIST
    with tempfile.TemporaryDirectory() as tmp:
        tarball = _download(Path(tmp))
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != INTEGRITY:
            raise SystemExit(f"@ohif/app {VERSION}: integrity {digest} does not match the pinned {INTEGRITY}")
        staging = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")]
            archive.extractall(staging, members=members, filter="data")
        DIST.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(DIST, ignore_errors=True)
        shutil.move(str(staging / "package" / "dist"), DIST)
    return DIST


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)
