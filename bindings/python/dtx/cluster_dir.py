"""Reading a cluster directory written by ``dtxctl cluster up``, or a cluster
file (docs/deploy.md): its ``cluster.conf`` (every node and its listeners,
and in a cluster file the settings ``tls``, ``certs``, ``data``), so that
:meth:`dtx.Client.from_cluster_dir` and :meth:`dtx.Client.from_cluster_file`
find the coordinators without addresses typed by hand. A directory's
``security.conf`` (TLS) is read by :meth:`dtx.TLS.from_cluster_dir`.

The grammar is tools/cluster_config.h's (``ClusterConfig::Parse`` in
tools/cluster_config.cc), and this parser is as strict as that one: a file the
tools refuse is refused here, with an :class:`~dtx.InvalidArgument` naming the
file and the line::

    file     = { line "\\n" }
    line     = [ node | setting ] [ ws ] [ "#" comment ]
    node     = name ws address { ws listener }
    listener = ( "admin=" | "peer=" | "metrics=" ) address   (each at most once)
    setting  = "tls" ws ("on" | "off") | "certs" ws path | "data" ws path
                                                 (each at most once; certs with tls on)
    name     = ("coordinator-" | "participant-") digits
    address  = host ":" port                     (port 1..65535; [v6host]:port)

Names are unique, no address is used by two listeners, coordinator-0 is
present, and participants are numbered 0..N-1 without gaps.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import List, Optional, Union

from dtx.errors import InvalidArgument

CLUSTER_CONF_FILE = "cluster.conf"
# tools/cluster_config.h kClusterNodesMax, kClusterConfBytesMax.
_NODES_MAX = 256
_CONF_BYTES_MAX = 64 * 1024
_NAME = re.compile(r"(coordinator|participant)-(0|[1-9][0-9]*)")
_INT_MAX = 2**31 - 1  # the index is a C++ int there
_WHITESPACE = " \t\r"


@dataclasses.dataclass(frozen=True)
class Node:
    """One line of cluster.conf: a node and its listeners. ``address`` is the
    client listener (what a client dials); ``admin`` and ``peer`` are ""
    when the line does not give them (a file from before those listeners)."""

    name: str
    kind: str  # "coordinator" or "participant"
    index: int
    address: str
    admin: str = ""
    peer: str = ""
    metrics: str = ""


@dataclasses.dataclass(frozen=True)
class ClusterFile:
    """A parsed cluster file: its nodes and its settings (``None`` when the
    file has no such line; a local cluster keeps TLS in security.conf)."""

    nodes: List[Node]
    tls: Optional[bool] = None
    certs: Optional[str] = None
    data: Optional[str] = None


def check_address(address: str) -> Optional[str]:
    """``None`` if ``address`` is a valid host:port (common/address.cc
    ParseHostPort), else what is wrong with it."""
    if address.startswith("["):
        close = address.find("]")
        if close < 0:
            return "no ']' after the IPv6 host"
        if close + 1 >= len(address) or address[close + 1] != ":":
            return "want [v6host]:port"
        host, port = address[1:close], address[close + 2:]
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            return "want host:port"
        if ":" in host:
            return "an IPv6 host needs brackets: [v6host]:port"
    if not host:
        return "empty host"
    if not port or len(port) > 5 or not port.isascii() or not port.isdigit():
        return "the port must be a decimal number"
    if not 1 <= int(port) <= 65535:
        return "port out of range 1..65535"
    return None


def parse_cluster_conf(text: str, path: str = CLUSTER_CONF_FILE) -> List[Node]:
    """The nodes of a cluster.conf, coordinators first, each kind by index.
    Raises :class:`InvalidArgument` naming ``path`` and the line."""
    return parse_cluster_file(text, path).nodes


def parse_cluster_file(text: str, path: str = CLUSTER_CONF_FILE) -> ClusterFile:
    """The nodes (as :func:`parse_cluster_conf`) and settings of a cluster
    file. Raises :class:`InvalidArgument` naming ``path`` and the line."""
    nodes: List[Node] = []
    used = {}  # address -> the node that listens there
    settings = {}  # "tls" -> bool, "certs"/"data" -> str

    def fail(line_no: int, what: str):
        raise InvalidArgument(f"{path} line {line_no}: {what}")

    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.split("#", 1)[0].strip(_WHITESPACE)
        if not line:
            continue
        fields = re.split(r"[ \t]+", line)
        if len(fields) < 2:
            fail(line_no, "expected 'NAME ADDRESS' or 'SETTING VALUE'")
        if fields[0] in ("tls", "certs", "data"):
            key = fields[0]
            # A path may hold spaces: the rest of the line.
            value = line[len(key):].strip(_WHITESPACE)
            if key in settings:
                fail(line_no, f"{key} given twice")
            if key == "tls":
                if value not in ("on", "off"):
                    fail(line_no, "tls must be 'on' or 'off'")
                settings[key] = value == "on"
            else:
                settings[key] = value
            continue
        name, address, listeners = fields[0], fields[1], {}
        for item in fields[2:]:
            key, sep, value = item.partition("=")
            if not sep or key not in ("admin", "peer", "metrics"):
                fail(line_no, f"expected 'admin=HOST:PORT', 'peer=HOST:PORT' or "
                              f"'metrics=HOST:PORT' after the address, got '{item}'")
            if not value:
                fail(line_no, f"empty {key} address")
            if key in listeners:
                fail(line_no, f"{key}= given twice")
            listeners[key] = value
        if len(nodes) >= _NODES_MAX:
            fail(line_no, f"more than {_NODES_MAX} nodes")
        m = _NAME.fullmatch(name)
        if not m or int(m.group(2)) > _INT_MAX:
            fail(line_no, f"node name '{name}' is not coordinator-N or participant-N")
        for a in [address] + list(listeners.values()):
            why = check_address(a)
            if why:
                fail(line_no, f"address '{a}': {why}")
        if any(n.name == name for n in nodes):
            fail(line_no, f"node '{name}' listed twice")
        admin, peer = listeners.get("admin", ""), listeners.get("peer", "")
        metrics = listeners.get("metrics", "")
        if admin and admin == address:
            fail(line_no, f"node '{name}': the admin address must differ from its address")
        if peer and peer in (address, admin):
            fail(line_no, f"node '{name}': the peer address must differ from its client and "
                          f"admin addresses")
        for a in (address, admin, peer, metrics):
            if a and a in used:
                fail(line_no, f"address {a} used by both {used[a]} and {name}")
            if a:
                used[a] = name
        nodes.append(Node(name=name, kind=m.group(1), index=int(m.group(2)), address=address,
                          admin=admin, peer=peer, metrics=metrics))
    nodes.sort(key=lambda n: (n.kind != "coordinator", n.index))
    if not any(n.name == "coordinator-0" for n in nodes):
        raise InvalidArgument(f"{path}: no coordinator-0")
    participants = [n.index for n in nodes if n.kind == "participant"]
    for expect, index in enumerate(participants):
        if index != expect:
            raise InvalidArgument(f"{path}: participants must be numbered 0..N-1; "
                                  f"participant-{expect} is missing")
    if not participants:
        raise InvalidArgument(f"{path}: no participants")
    if "certs" in settings and "tls" not in settings:
        raise InvalidArgument(f"{path}: certs without a tls line")
    if settings.get("tls") and "certs" not in settings:
        raise InvalidArgument(f"{path}: tls on without a certs line")
    return ClusterFile(nodes=nodes, tls=settings.get("tls"), certs=settings.get("certs"),
                       data=settings.get("data"))


def read_conf_text(path: str, max_bytes: int) -> Optional[str]:
    """The text of a small configuration file of the cluster directory, or
    None if there is no such file. Raises :class:`InvalidArgument` for a file
    that cannot be read, is larger than ``max_bytes`` or is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InvalidArgument(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise InvalidArgument(f"{path}: larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path}: not UTF-8 text") from None


def load_cluster_conf(directory: Union[str, os.PathLike]) -> List[Node]:
    """The nodes of ``DIR/cluster.conf`` (see :func:`parse_cluster_conf`).
    Raises :class:`InvalidArgument` for a missing directory or file, or a
    malformed one."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise InvalidArgument(f"no cluster directory {directory!r}")
    path = os.path.join(directory, CLUSTER_CONF_FILE)
    text = read_conf_text(path, _CONF_BYTES_MAX)
    if text is None:
        raise InvalidArgument(f"{path}: no such file (is {directory} a directory made by "
                              f"`dtxctl cluster up --dir`?)")
    return parse_cluster_conf(text, path)


def load_cluster_file(path: Union[str, os.PathLike]) -> ClusterFile:
    """A cluster file (see :func:`parse_cluster_file`). Raises
    :class:`InvalidArgument` for a missing or malformed file."""
    path = os.fspath(path)
    text = read_conf_text(path, _CONF_BYTES_MAX)
    if text is None:
        raise InvalidArgument(f"no cluster file {path!r}")
    return parse_cluster_file(text, path)
