"""Real peers for integration tests, on 127.0.0.1 with free ports: Orthanc (with its
DICOMweb plugin), a static server for the OHIF viewer that proxies DICOMweb to it, and
Debian's redis-server as the Celery broker."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc with its DICOMweb plugin, storage in ``folder``, no remote access,
    no authentication (loopback only), its DICOM listener off unless ``dicom_port``;
    with ``modalities`` (name → [AE, host, port]) only those may store; ``cpus``: the
    CPUs it may run on."""

    def __init__(self, folder: Path, dicom_port: int | None = None, extra: dict | None = None,
                 ae_title: str = "ORTHANC", modalities: dict[str, list] | None = None, cpus: set[int] | None = None):
        if not shutil.which("Orthanc"):
            pytest.fail("Orthanc is not installed; run `make system-deps`")
        self.folder = folder
        self.dicom_port = dicom_port
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "glioma-node-test", "DicomAet": ae_title, "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": dicom_port is not None, "DicomPort": dicom_port or free_port(),
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 2, "HttpCompressionEnabled": False,
            # only the listed modalities (AE, host, port) may store, and only from their host
            "DicomAlwaysAllowStore": not modalities, "DicomModalities": modalities or {},
            "DicomCheckModalityHost": True, **(extra or {}),
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = open(folder / "orthanc.log", "w")
        self.process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT,
                                        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"Orthanc did not start; see {folder / 'orthanc.log'}")

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: object) -> object:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def upload(self, path: Path) -> dict:
        request = urllib.request.Request(self.url + "/instances", data=path.read_bytes(), method="POST",
                                         headers={"Content-Type": "application/dicom"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class _ViewerHandler(SimpleHTTPRequestHandler):
    """OHIF's files, its app-config.js, DICOMweb proxied to Orthanc, index.html for app routes."""

    def __init__(self, *args, orthanc: str, app_config: str, **kwargs):
        self.orthanc, self.app_config = orthanc, app_config
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def end_headers(self) -> None:
        # cross-origin isolation, so that OHIF may use SharedArrayBuffer
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0]
        if path.startswith("/dicom-web/"):
            return self._proxy()
        if path == "/app-config.js":
            body = self.app_config.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not Path(self.translate_path(path)).exists():
            self.path = "/index.html"
        return super().do_GET()

    def _proxy(self) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
        request = urllib.request.Request(self.orthanc + self.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body, status, kept = response.read(), response.status, response.headers
        except urllib.error.HTTPError as exc:
            body, status, kept = exc.read(), exc.code, exc.headers
        self.send_response(status)
        for key in ("Content-Type",):
            if kept.get(key):
                self.send_header(key, kept[key])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def ohif_config(url: str) -> str:
    """An app-config.js with one DICOMweb data source at ``url`` (Orthanc, proxied)."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb", "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (test)", "name": "orthanc", "wadoUriRoot": url, "qidoRoot": url,
            "wadoRoot": url, "qidoSupportsIncludeField": False, "imageRendering": "wadors",
            "thumbnailRendering": "wadors", "enableStudyLazyLoad": True, "supportsFuzzyMatching": False,
            "supportsWildcard": True, "staticWado": False, "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {"routerBasename": "/", "extensions": [], "modes": [], "showStudyList": True,
              "maxNumberOfWebWorkers": 2, "showLoadingIndicator": True, "strictZSpacingForVolumeViewport": True,
              "defaultDataSourceName": "orthanc", "dataSources": [source], "showCPUFallbackMessage": False,
              "investigationalUseDialog": {"option": "never"}}
    return f"window.config = {json.dumps(config, indent=1)};\n"


class ViewerServer:
    """OHIF's built ``dist`` folder served on 127.0.0.1, reading studies from ``orthanc``."""

    def __init__(self, dist: Path, orthanc: Orthanc):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        handler = partial(_ViewerHandler, directory=str(dist), orthanc=orthanc.url,
                          app_config=ohif_config(f"{self.url}/dicom-web"))
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def headless_chromium(profile: Path):
    """Debian's Chromium, headless, driven by Debian's chromedriver (Selenium).

    Software WebGL (SwiftShader) so that OHIF's renderer works without a GPU; background
    networking off, so the browser reaches nothing but 127.0.0.1.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(tool).exists():
            pytest.fail(f"{tool} is not installed; run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1000", "--enable-unsafe-swiftshader",
                "--use-angle=swiftshader", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class RedisServer:
    """redis-server on 127.0.0.1 and a free port; no persistence, its files in ``folder``."""

    def __init__(self, folder: Path):
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is missing: `make system-deps` installs Debian's redis-server")
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--protected-mode", "yes", "--logfile", str(self.folder / "redis.log")],
            cwd=self.folder)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"redis-server did not answer; see {self.folder / 'redis.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def queue_length(self, queue: str) -> int:
        """Tasks waiting in the Celery queue ``queue`` (a Redis list in database 0)."""
        import redis

        return int(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5).llen(queue))
