"""`glioma-node orthanc-config`: a ready Orthanc configuration that runs the node as a plugin.

Writes into ``--out``:

* ``orthanc.json``: loopback HTTP only (RemoteAccessAllowed false), the allowed senders
  as the only modalities that may store (host checked), StableAge 5 s, the Python and
  DICOMweb plugins, the ``GliomaNodeStatus`` user metadata, and a ``GliomaNode`` section
  naming the node configuration;
* ``glioma-node.yaml``: the node configuration (from ``--config`` or the default) with
  its data directory under ``--out`` and results stored back into this Orthanc;
* ``glioma_node_plugin.py``: the script Orthanc's embedded Python runs. Debian's
  orthanc-python embeds the system Python 3.11, so the script puts this project and its
  environment first on ``sys.path`` and makes the worker processes start with the
  environment's interpreter.

Then ``Orthanc OUT/orthanc.json`` runs the pipeline.
"""
from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import yaml

from glioma_node.core.resources import import_root
from glioma_node.service.config import Config, parse_peer, with_overrides

PYTHON_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPython.so")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

_SCRIPT = '''# Written by `glioma-node orthanc-config`; runs inside Orthanc's embedded Python
# (the orthanc-python plugin, AGPL-3.0: see docs/deploy.md before you change it).
import multiprocessing
import site
import sys

sys.path[:0] = [{repo!r}, {site_packages!r}]
site.addsitedir({site_packages!r})  # .pth files: the editable install
multiprocessing.set_executable({python!r})  # workers start with the environment, not Orthanc

from glioma_node.service.orthanc_plugin import register

register()
'''


def write_orthanc_config(out: Path, config: Config, http_port: int, dicom_port: int, allow: list[str],
                         ae_title: str = "GLIOMA_ORTHANC", plugins: tuple[Path, Path] = (PYTHON_PLUGIN, DICOMWEB_PLUGIN)
                         ) -> dict[str, Path]:
    """Write the three files (see the module doc); returns their paths."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for plugin in plugins:
        if not plugin.exists():
            raise FileNotFoundError(f"{plugin} is missing: install Debian's orthanc-python and orthanc-dicomweb")
    node = with_overrides(config, data_dir=out / "node").model_dump(mode="json")
    node["dispatch"]["orthanc_self"] = True
    node_path = out / "glioma-node.yaml"
    node_path.write_text("# Written by `glioma-node orthanc-config`: the node inside Orthanc.\n"
                         + yaml.safe_dump(node, sort_keys=False))
    script = out / "glioma_node_plugin.py"
    script.write_text(_SCRIPT.format(repo=str(import_root()), site_packages=sysconfig.get_paths()["purelib"],
                                     python=sys.executable))
    modalities = {}
    for n, text in enumerate(allow):
        peer = parse_peer(text)
        modalities[f"sender-{n}-{peer['ae_title'].lower()}"] = [peer["ae_title"], peer["host"], peer.get("port", 104)]
    orthanc = {
        "Name": "glioma-node", "DicomAet": ae_title, "DicomPort": dicom_port, "HttpPort": http_port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "StorageDirectory": str(out / "orthanc-db"), "IndexDirectory": str(out / "orthanc-db"),
        "StableAge": 5, "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True,
        "DicomModalities": modalities,
        # the compressed syntaxes the node decodes (Debian's Orthanc refuses some unless told):
        # a PACS that forwards JPEG 2000 must be able to reach the plugin
        "DeflatedTransferSyntaxAccepted": True, "JpegTransferSyntaxAccepted": True,
        "Jpeg2000TransferSyntaxAccepted": True, "JpegLosslessTransferSyntaxAccepted": True,
        "RleTransferSyntaxAccepted": True,
        "Plugins": [str(p) for p in plugins], "PythonScript": str(script), "PythonVerbose": False,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "UserMetadata": {"GliomaNodeStatus": 1024},
        "GliomaNode": {"Config": str(node_path)},
    }
    orthanc_path = out / "orthanc.json"
    orthanc_path.write_text(json.dumps(orthanc, indent=2) + "\n")
    return {"orthanc": orthanc_path, "node": node_path, "script": script}
