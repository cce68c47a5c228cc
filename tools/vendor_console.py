"""Fetch the console's vendored npm files again and check them against vendor.json.

    python tools/vendor_console.py          # check: fetch each package, compare
    python tools/vendor_console.py --write  # also copy the files and licenses in

Each package in ``lictor/console/static/vendor/vendor.json`` is fetched with
``npm pack NAME@VERSION`` (the npm registry, nothing else); its listed files
and license are compared byte for byte with the vendored ones. To move to a
new version, change the version in vendor.json, run with ``--write``, and
commit the files with the new SHA-256 it prints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "lictor" / "console" / "static" / "vendor"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="copy the fetched files in")
    args = parser.parse_args()
    manifest = json.loads((VENDOR / "vendor.json").read_text())
    differ = 0
    with tempfile.TemporaryDirectory() as temp:
        for package in manifest["packages"]:
            spec = f"{package['npm']}@{package['version']}"
            out = subprocess.run(
                ["npm", "pack", spec, "--silent"], cwd=temp, capture_output=True, text=True
            )
            if out.returncode != 0:
                print(f"{spec}: npm pack failed: {out.stderr.strip()}", file=sys.stderr)
                return 1
            unpacked = Path(temp) / package["npm"]
            with tarfile.open(Path(temp) / out.stdout.strip().splitlines()[-1]) as tar:
                tar.extractall(unpacked, filter="data")
            files = {name: facts["from"] for name, facts in package["files"].items()}
            files[package["license_file"]] = "package/LICENSE"
            for name, source in files.items():
                fetched = (unpacked / source).read_bytes()
                digest = hashlib.sha256(fetched).hexdigest()
                same = (VENDOR / name).exists() and (VENDOR / name).read_bytes() == fetched
                print(f"{spec} {name}: sha256 {digest} {'same' if same else 'DIFFERS'}")
                differ += not same
                if args.write and not same:
                    shutil.copyfile(unpacked / source, VENDOR / name)
                    if name in package["files"]:
                        package["files"][name]["sha256"] = digest
    if args.write:
        (VENDOR / "vendor.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 1 if differ and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
