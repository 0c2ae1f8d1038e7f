"""Load and validate the node's YAML configuration (``glioma_node/conf/glioma-node.yaml``).

Validation happens once, at start; :class:`ConfigError` names each bad key with a
dotted path (``node.allowed_peers[0].ae_title``) and says what is expected. Mistakes
that would otherwise surface later, as a traceback or as silence, are found here too:
TLS files that do not hold what their key says (read with :mod:`ssl`, as the listener
reads them), the metrics port on the DICOM port, a data folder that is a file, a peer
allowed from the "any" address, a destination that is the node itself.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from glioma_node.core.resources import DEFAULT_CONFIG
from glioma_node.core.roles import ROLES
from glioma_node.dicom_io.bounded import ReadLimits
from glioma_node.dicom_io.sequence_rules import SequenceRules

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL})(\.{_LABEL})*$")


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_ae_title(value: str) -> str:
    """A DICOM AE title: 1–16 characters of the default repertoire, no backslash, not blank."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("an AE title must be 1-16 characters, not blank")
    if len(value) > 16:
        raise ValueError(f"an AE title has at most 16 characters; {value!r} has {len(value)}")
    if "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise ValueError(f"an AE title may not contain backslashes, control or non-ASCII characters: {value!r}")
    return value.strip()


def check_host(value: str) -> str:
    """An IPv4/IPv6 address or a DNS host name."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value or ""):
        raise ValueError(f"expected an IP address or host name, got {value!r}")
    return value


def check_peer_host(value: str) -> str:
    """:func:`check_host`, and not the "any" address (0.0.0.0, ::): a listener binds to it,
    but no connection comes from it, so such a peer would be refused every time."""
    value = check_host(value)
    try:
        unspecified = ipaddress.ip_address(value).is_unspecified
    except ValueError:
        return value
    if unspecified:
        raise ValueError(f"{value} means any address to a listener, but no peer connects from it: this peer would "
                         "be refused every time; give the address (or host name) the peer connects from")
    return value


class Peer(_Strict):
    """A peer allowed to send studies (``node.allowed_peers``); ``port`` is its own Storage SCP, for
    return_to_caller."""

    ae_title: str
    host: str
    # The peer's own Storage SCP port, for dispatch.return_to_caller (None: not sent back).
    port: int | None = Field(default=None, ge=1, le=65535)

    _ae = field_validator("ae_title")(check_ae_title)
    _host = field_validator("host")(check_peer_host)


class Destination(_Strict):
    """A C-STORE destination for results (``destinations``)."""

    name: str = Field(min_length=1)
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)

    _ae = field_validator("ae_title")(check_ae_title)
    _host = field_validator("host")(check_host)


class TLS(_Strict):
    """DICOM TLS for the listener (``node.tls``): certificate, key and the CAs that sign peers; all or none."""

    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None

    @field_validator("certificate", "ca_certificates")
    @classmethod
    def _holds_certificates(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        what = ("the certificates of the CAs that sign the peers' certificates" if info.field_name == "ca_certificates"
                else "the node's own certificate")
        _readable(value, what)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(value))
        except ssl.SSLError as exc:
            raise ValueError(f"{value} holds no PEM certificate ({exc.reason or exc}; a private key?): give "
                             f"{what}, in PEM form (-----BEGIN CERTIFICATE-----)") from None
        return value

    @field_validator("private_key")
    @classmethod
    def _matches_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        _readable(value, "the private key of node.tls.certificate")
        certificate = info.data.get("certificate")
        if certificate is None:  # absent (all or none says so) or already reported
            return value
        asked: list[bool] = []

        def passphrase() -> bytes:
            asked.append(True)
            return b""

        try:  # as the listener loads them (service/scp.py), but never prompting on a terminal
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certificate), str(value), password=passphrase)
        except ssl.SSLError as exc:
            if asked:
                raise ValueError(f"{value} is encrypted and the node cannot ask for its passphrase: store it "
                                 "unencrypted (openssl pkey -in KEY -out NEW_KEY), readable by the node's user only"
                                 ) from None
            raise ValueError(f"{value} is not the private key of node.tls.certificate ({certificate}) or not a PEM "
                             f"private key ({exc.reason or exc}): give the key the certificate was issued for") from None
        return value

    @model_validator(mode="after")
    def _all_or_none(self) -> TLS:
        given = [v is not None for v in (self.certificate, self.private_key, self.ca_certificates)]
        if any(given) and not all(given):
            raise ValueError("TLS needs certificate, private_key and ca_certificates together (or none of them)")
        return self

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured."""
        return self.certificate is not None


def _readable(path: Path, what: str) -> None:
    """ValueError unless ``path`` is a file this process can read (``what`` it should hold)."""
    if not path.is_file():
        raise ValueError(f"no such file: {path} (it should hold {what})")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror} (the node's user must be able to read it)") from None


class NodeSettings(_Strict):
    """The listener (``node``): AE title, port, peers, limits and timeouts (seconds)."""

    ae_title: str
    bind_address: str
    port: int = Field(ge=1, le=65535)
    allowed_peers: list[Peer]
    max_associations: int = Field(ge=1, le=256)
    # Processes accepting associations on the port (SO_REUSEPORT): concurrent associations
    # then use more than one core; max_associations is shared out among them.
    receivers: int = Field(default=1, ge=1, le=32)
    max_pdu_bytes: int = Field(ge=0)
    tls: TLS = TLS()
    # before metrics_port, whose check compares the two addresses
    metrics_bind_address: str = "127.0.0.1"
    metrics_port: int = Field(default=11180, ge=0, le=65535)
    min_free_mb: int = Field(default=2048, ge=0)
    # Reject associations calling another AE title than ae_title (false: promiscuous).
    require_called_ae_title: bool = True
    acse_timeout_s: float = Field(default=30, gt=0)
    network_timeout_s: float = Field(default=60, gt=0)
    dimse_timeout_s: float = Field(default=60, gt=0)
    tls_handshake_timeout_s: float = Field(default=10, gt=0)
    # Bounds on what one peer can make the node hold: an instance's size after inflating a
    # Deflated transfer syntax (MB), and an image's voxels (Rows x Columns x frames, and
    # x instances for a series) before any pixel array is allocated.
    max_instance_mb: int = Field(default=512, ge=1)
    max_series_voxels: int = Field(default=2**28, ge=1)
    # The health/metrics HTTP port: a client silent this long (s) is dropped, and at most
    # this many connections are served at once (more are closed at once).
    http_timeout_s: float = Field(default=10, gt=0)
    http_max_connections: int = Field(default=32, ge=1, le=1024)

    @property
    def min_free_bytes(self) -> int:
        """``min_free_mb`` in bytes: the data folder's free-space watermark."""
        return self.min_free_mb * 1024**2

    def read_limits(self) -> ReadLimits:
        """The bounds on reading one study (``max_instance_mb``, ``max_series_voxels``)."""
        return ReadLimits(self.max_instance_mb * 1024**2, self.max_series_voxels)

    _ae = field_validator("ae_title")(check_ae_title)
    _host = field_validator("bind_address")(check_host)

    @field_validator("metrics_port")
    @classmethod
    def _not_the_dicom_port(cls, value: int, info: ValidationInfo) -> int:
        wildcard = {"0.0.0.0", "::", ""}
        addresses = {info.data.get("bind_address", ""), info.data.get("metrics_bind_address", "")}
        same_address = len(addresses) == 1 or bool(addresses & wildcard)
        if value and value == info.data.get("port") and same_address:
            raise ValueError(f"{value} is node.port too, on the same address: the DICOM listener and the "
                             "health/metrics server cannot share a port; choose another (11180 is the usual one) "
                             "or 0 to turn /health and /metrics off")
        return value


class Assembly(_Strict):
    """When a study is complete (``assembly``): required roles, quiet period and force timeout (seconds)."""

    required_roles: list[str] = Field(min_length=1)
    quiet_period_s: float = Field(gt=0)
    force_timeout_s: float = Field(gt=0)
    reprocess_new_series: bool = True

    @field_validator("required_roles")
    @classmethod
    def _roles(cls, roles: list[str]) -> list[str]:
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ValueError(f"unknown role(s) {bad}; roles are {', '.join(ROLES)}")
        if "FLAIR" not in roles and "T2" not in roles:
            raise ValueError("FLAIR or T2 must be required: the whole tumour is defined on them")
        return roles


class StowDestination(_Strict):
    """A DICOMweb STOW-RS destination for results (``dispatch.dicomweb``)."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")


class Dispatch(_Strict):
    """How results leave the node; see glioma_node/conf/glioma-node.yaml."""

    return_to_caller: bool = False
    dicomweb: list[StowDestination] = Field(default_factory=list)
    # Plugin mode: store the results back into the Orthanc the node runs in.
    orthanc_self: bool = False
    retry_initial_s: float = Field(default=5, gt=0)
    retry_max_s: float = Field(default=300, gt=0)
    max_attempts: int = Field(default=100, ge=1)
    # C-STORE: association request, each response and any silence; STOW-RS: the whole request
    timeout_s: float = Field(default=60, gt=0)
    stow_timeout_s: float = Field(default=120, gt=0)


class Worker(_Strict):
    """How the worker retries a process job that raised an unexpected error; see glioma_node/conf/glioma-node.yaml."""

    max_attempts: int = Field(default=3, ge=1)
    retry_delay_s: float = Field(default=10, gt=0)  # times the attempt number: 10 s, 20 s, ...


class EngineKind(StrEnum):
    """Where process jobs run: ``local`` in the node's own worker process, ``celery`` on
    Celery workers (``glioma-node worker``) that share the node's data_dir."""

    LOCAL = "local"
    CELERY = "celery"


class QueueName(StrEnum):
    """The Celery queue a process job goes to, by the capability it needs."""

    CPU = "cpu"
    GPU = "gpu"


class Execution(_Strict):
    """How process jobs are executed; see glioma_node/conf/glioma-node.yaml."""

    engine: EngineKind = EngineKind.LOCAL
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|amqp|amqps)://")
    queue: QueueName = QueueName.CPU
    visibility_timeout_s: float = Field(default=7200, gt=0)
    heartbeat_s: float = Field(default=10, gt=0)
    stale_after_s: float = Field(default=120, gt=0)
    requeue_after_s: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Execution:
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ValueError(f"stale_after_s ({self.stale_after_s}) must exceed twice heartbeat_s "
                             f"({self.heartbeat_s}), or a live worker looks dead")
        if self.visibility_timeout_s <= self.stale_after_s:
            raise ValueError(f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed stale_after_s "
                             f"({self.stale_after_s}): the broker would redeliver a job its worker still runs")
        return self


SegmenterKindName = Literal["glioma-node", "monai-bundle", "nnunet", "captk-deepmedic", "ensemble"]


class SegmenterMember(_Strict):
    """One model of an ensemble; see glioma_node/conf/glioma-node.yaml."""

    kind: Literal["glioma-node", "monai-bundle", "nnunet", "captk-deepmedic"]
    path: Path
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    checkpoint: str = "checkpoint_final.pth"


class SegmentationQualityCheck(_Strict):
    """When a tumour mask is called doubtful, and what is reported then (inference/quality.py)."""

    min_score: float = Field(default=0.5, ge=0, le=1)
    report_when_doubtful: bool = False


class SegmentationModel(_Strict):
    """Which segmenter runs; see glioma_node/conf/glioma-node.yaml."""

    kind: SegmenterKindName = "glioma-node"
    path: Path | None = None
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    checkpoint: str = "checkpoint_final.pth"
    members: list[SegmenterMember] = Field(default_factory=list)
    min_component_ml: float = Field(default=0.3, ge=0)
    quality: SegmentationQualityCheck = Field(default_factory=SegmentationQualityCheck)

    @model_validator(mode="after")
    def _path_or_members(self) -> SegmentationModel:
        if self.kind == "ensemble":
            if len(self.members) < 2:
                raise ValueError("an ensemble needs at least two members (kind and path each)")
        elif self.path is None:
            raise ValueError(f"kind {self.kind} needs a path")
        elif self.members:
            raise ValueError("members are for kind: ensemble only")
        return self


class RadiogenomicsModel(_Strict):
    """Which radiogenomic model runs, and which variant per target; see glioma_node/conf/glioma-node.yaml."""

    path: Path
    mgmt: Literal["default", "early", "attention", "cnn"] = "default"
    idh: Literal["default", "early", "attention", "cnn"] = "default"
    chemo_benefit: Literal["default", "early", "attention", "cnn"] = "default"
    workers: int | None = Field(default=None, ge=1, le=64)
    enabled: bool = True


class BrainExtraction(_Strict):
    """How the skull is stripped before any segmenter runs; see glioma_node/conf/glioma-node.yaml."""

    kind: Literal["deepbet", "none"] = "deepbet"


class Models(_Strict):
    """The model directories (``models``): brain extraction, segmentation, radiogenomics."""

    brain_extraction: BrainExtraction = BrainExtraction()
    segmentation: SegmentationModel
    radiogenomics: RadiogenomicsModel


class Thresholds(_Strict):
    """Decision thresholds (``thresholds``): MGMT, IDH, chemotherapy benefit and the least role confidence."""

    mgmt_methylated: float | None = Field(default=None, ge=0, le=1)
    idh_mutant: float | None = Field(default=None, ge=0, le=1)
    chemo_benefit: float | None = Field(default=None, ge=0, le=1)
    min_role_confidence: float = Field(ge=0, le=1)


class Clinical(_Strict):
    """The site's clinical source (``clinical``): a CSV of known MGMT/IDH/EGFR status; see service/clinical.py."""

    path: Path | None = None

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value} (the site's LIMS export; null when there is none)")
        return value


EFFICIENTNETS = tuple(f"efficientnet-b{k}" for k in range(8))


class RadiogenomicTraining(_Strict):
    """Defaults of ``glioma-node train radiogenomics`` (``training.radiogenomics``); the command line overrides them."""

    cnn_model: Literal[EFFICIENTNETS] = "efficientnet-b0"  # type: ignore[valid-type]
    cnn_crop_size: int | None = Field(default=None, ge=16, le=256)
    cnn_crop_spacing_mm: int | None = Field(default=None, ge=1, le=4)


class Training(_Strict):
    """Training defaults (``training``)."""

    radiogenomics: RadiogenomicTraining = RadiogenomicTraining()


class Config(_Strict):
    """The whole configuration; see glioma_node/conf/glioma-node.yaml for what each key means."""

    node: NodeSettings
    destinations: list[Destination]
    dispatch: Dispatch = Dispatch()
    worker: Worker = Worker()
    execution: Execution = Execution()
    data_dir: Path
    assembly: Assembly
    models: Models
    thresholds: Thresholds
    sequences: SequenceRules
    clinical: Clinical = Clinical()
    training: Training = Training()

    @field_validator("data_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        for folder in (value, *value.parents):  # the nearest part that exists must be a folder
            try:
                if not folder.exists():
                    continue
                if folder.is_dir():
                    return value
            except OSError:  # not ours to look into: the node's start says what it cannot do
                return value
            where = "" if folder == value else f" (in {value})"
            raise ValueError(f"{folder}{where} is a file, not a folder: data_dir is the folder for the spool, the "
                             "state database and the results (created if missing); give a folder's path")
        return value


def _is_local(host: str, bind_address: str) -> bool:
    """Whether ``host`` names this machine: a loopback or "any" address, the address the
    node listens on, localhost or this machine's name (no DNS lookup: a name that only
    DNS knows as local is not recognised)."""
    names = {"localhost", "localhost.localdomain", socket.gethostname().lower(), bind_address.lower()}
    if host.lower() in names:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _whole_problems(config: Config) -> list[str]:
    """Mistakes no single key shows, each as ``dotted.key: what to fix``."""
    node = config.node
    problems = []
    for n, destination in enumerate(config.destinations):
        if (destination.ae_title == node.ae_title and destination.port == node.port
                and _is_local(destination.host, node.bind_address)):
            problems.append(f"destinations[{n}]: {destination.ae_title}@{destination.host}:{destination.port} is "
                            "this node itself (node.ae_title and node.port, on a local address): results sent there "
                            "would come back in as a new study; give the AE title, host and port of the PACS that "
                            "is to receive them")
    return problems


def _validated(raw: Any, what: str) -> Config:
    """``Config`` from ``raw``, or ConfigError ``invalid <what> (N problem(s))`` listing each."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_explain(e)}" for e in exc.errors())
        raise ConfigError(f"invalid {what} ({len(exc.errors())} problem(s)):\n{problems}") from None
    whole = _whole_problems(config)
    if whole:
        raise ConfigError(f"invalid {what} ({len(whole)} problem(s)):\n" + "\n".join(f"  - {p}" for p in whole))
    return config


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _explain(error: Mapping[str, Any]) -> str:
    key = _dotted(tuple(p for p in error["loc"] if p not in ("function-after",)))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (misspelt? see glioma_node/conf/glioma-node.yaml for the keys)"
    if kind == "missing":
        return f"{key}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {message} (got {error.get('input')!r})"


def _resolve_paths(raw: dict[str, Any], base: Path, data_base: Path | None = None) -> dict[str, Any]:
    def resolve(value: Any, against: Path = base) -> Any:
        if value is None:
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else (against / p).resolve()

    raw = dict(raw)
    if "data_dir" in raw:
        raw["data_dir"] = resolve(raw["data_dir"], data_base or base)
    if isinstance(raw.get("models"), dict):
        models = dict(raw["models"])
        seg = models.get("segmentation")
        if isinstance(seg, dict):
            models["segmentation"] = {k: resolve(v) if k == "path" else v for k, v in seg.items()}
            members = models["segmentation"].get("members")
            if isinstance(members, list):
                models["segmentation"]["members"] = [
                    {k: resolve(v) if k == "path" else v for k, v in m.items()} if isinstance(m, dict) else m
                    for m in members]
        elif seg is not None:
            models["segmentation"] = {"path": resolve(seg)}
        rg = models.get("radiogenomics")
        if isinstance(rg, dict):
            models["radiogenomics"] = {k: resolve(v) if k == "path" else v for k, v in rg.items()}
        elif rg is not None:
            models["radiogenomics"] = {"path": resolve(rg)}
        raw["models"] = models
    if isinstance(raw.get("clinical"), dict):
        raw["clinical"] = {k: resolve(v) if k == "path" else v for k, v in raw["clinical"].items()}
    node = raw.get("node")
    if isinstance(node, dict) and isinstance(node.get("tls"), dict):
        raw["node"] = {**node, "tls": {k: resolve(v) for k, v in node["tls"].items()}}
    return raw


def parse_config(raw: Any, base: Path, data_base: Path | None = None) -> Config:
    """Validate an already-parsed YAML document; relative paths resolve against ``base``
    (``data_dir`` against ``data_base`` when given)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping of keys, got {type(raw).__name__}")
    return _validated(_resolve_paths(raw, base, data_base), "configuration")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a configuration file (the embedded default when ``path`` is None).

    Relative paths resolve against the file's folder; the embedded default's ``data_dir``
    resolves against the working directory instead, so an installed node never writes
    into its own package."""
    embedded = not path
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        return parse_config(raw, path.resolve().parent, Path.cwd() if embedded else None)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_peer(text: str) -> dict[str, Any]:
    """``AET@HOST`` (or ``AET@HOST:PORT``) → a peer mapping; ValueError with the expected form."""
    ae, sep, rest = text.partition("@")
    host, _, port = rest.partition(":")
    if not sep or not ae or not host or (port and not port.isdigit()):
        raise ValueError(f"expected AET@HOST or AET@HOST:PORT, got {text!r}")
    return {"ae_title": ae, "host": host, **({"port": int(port)} if port else {})}


def with_overrides(config: Config, data_dir: Path | None = None, port: int | None = None,
                   ae_title: str | None = None, allow: list[str] | None = None,
                   destinations: list[str] | None = None, metrics_port: int | None = None) -> Config:
    """``config`` with command-line values in place of the file's, validated again."""
    raw = config.model_dump()
    node = raw["node"]
    if port is not None:
        node["port"] = port
    if ae_title is not None:
        node["ae_title"] = ae_title
    if metrics_port is not None:
        node["metrics_port"] = metrics_port
    if allow:
        node["allowed_peers"] = [parse_peer(a) for a in allow]
    if destinations:
        raw["destinations"] = []
        for n, text in enumerate(destinations):
            peer = parse_peer(text)
            if "port" not in peer:
                raise ValueError(f"a destination needs a port: AET@HOST:PORT, got {text!r}")
            raw["destinations"].append({"name": f"{peer['ae_title'].lower()}-{n}", **peer})
    if data_dir is not None:
        raw["data_dir"] = data_dir.resolve()
    return _validated(raw, "command-line value")
