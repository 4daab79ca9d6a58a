"""Client.from_cluster_dir and the cluster.conf reader (dtx/cluster_dir.py):
strict as tools/cluster_config.cc (each malformed file is checked against
dtxctl, which reads it with the C++ parser), and used against real clusters."""

import pathlib
import re
import subprocess

import pytest

import dtx
from conftest import dtxctl_path
from dtx.cluster_dir import Node, load_cluster_conf, parse_cluster_conf


def test_parse_reads_every_listener_and_orders_coordinators_first():
    text = ("# dtx local cluster\n"
            "participant-1 127.0.0.1:7102\t peer=127.0.0.1:7302 admin=127.0.0.1:7202\r\n"
            "\n"
            "participant-0 [::1]:7100   # IPv6, no admin/peer (an older file)\n"
            "coordinator-1 127.0.0.1:7111 admin=127.0.0.1:7211\n"
            "coordinator-0 localhost:7101 admin=127.0.0.1:7201 peer=127.0.0.1:7301\n")
    assert parse_cluster_conf(text) == [
        Node("coordinator-0", "coordinator", 0, "localhost:7101", "127.0.0.1:7201",
             "127.0.0.1:7301"),
        Node("coordinator-1", "coordinator", 1, "127.0.0.1:7111", "127.0.0.1:7211", ""),
        Node("participant-0", "participant", 0, "[::1]:7100", "", ""),
        Node("participant-1", "participant", 1, "127.0.0.1:7102", "127.0.0.1:7202",
             "127.0.0.1:7302"),
    ]


_C0 = "coordinator-0 127.0.0.1:7101\n"
_P0 = "participant-0 127.0.0.1:7100\n"


@pytest.mark.parametrize("text,error", [
    (_C0 + "participant-0 127.0.0.1:7100 admin\n",
     "line 2: expected 'admin=HOST:PORT' or 'peer=HOST:PORT' after the address, got 'admin'"),
    (_C0 + "participant-0 127.0.0.1:7100 colour=blue\n", "line 2: expected 'admin=HOST:PORT'"),
    ("coordinator-0\n" + _P0, "line 1: expected 'NAME ADDRESS'"),
    ("coordinator-0 127.0.0.1:7101 admin=\n" + _P0, "line 1: empty admin address"),
    ("coordinator-0 127.0.0.1:7101 peer=127.0.0.1:1 peer=127.0.0.1:2\n" + _P0,
     "line 1: peer= given twice"),
    ("coordinator-01 127.0.0.1:7101\n" + _P0,
     "line 1: node name 'coordinator-01' is not coordinator-N or participant-N"),
    (_C0 + "backup-0 127.0.0.1:7100\n", "line 2: node name 'backup-0' is not"),
    ("coordinator-0 127.0.0.1:0\n" + _P0,
     "line 1: address '127.0.0.1:0': port out of range 1..65535"),
    ("coordinator-0 ::1:7101\n" + _P0, "line 1: address '::1:7101': an IPv6 host needs brackets"),
    ("coordinator-0 127.0.0.1:http\n" + _P0, "the port must be a decimal number"),
    (_C0 + _P0 + "coordinator-0 127.0.0.1:7111\n", "line 3: node 'coordinator-0' listed twice"),
    (_C0 + "participant-0 127.0.0.1:7101\n",
     "line 2: address 127.0.0.1:7101 used by both coordinator-0 and participant-0"),
    (_C0 + "participant-0 127.0.0.1:7100 peer=127.0.0.1:7101\n",
     "line 2: address 127.0.0.1:7101 used by both coordinator-0 and participant-0"),
    ("coordinator-0 127.0.0.1:7101 admin=127.0.0.1:7101\n" + _P0,
     "line 1: node 'coordinator-0': the admin address must differ from its address"),
    ("coordinator-0 127.0.0.1:7101 admin=127.0.0.1:7201 peer=127.0.0.1:7201\n" + _P0,
     "line 1: node 'coordinator-0': the peer address must differ"),
    (_P0, ": no coordinator-0"),
    (_C0 + "participant-1 127.0.0.1:7100\n",
     ": participants must be numbered 0..N-1; participant-0 is missing"),
    (_C0, ": no participants"),
])
def test_malformed_cluster_conf_is_refused_naming_the_line_as_dtxctl_does(tmp_path, text, error):
    (tmp_path / "cluster.conf").write_text(text)
    path = str(tmp_path / "cluster.conf")
    with pytest.raises(dtx.InvalidArgument) as e:
        load_cluster_conf(tmp_path)
    message = str(e.value)
    assert message.startswith(path) and error in message, message
    # The tools refuse the same file with the same words (their message puts
    # "PATH: cluster.conf line N" where this one has "PATH line N").
    r = subprocess.run([str(dtxctl_path()), "status", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert message.replace(f"{path} line", f"{path}: cluster.conf line") in r.stderr, r.stderr


def test_missing_directory_or_file_is_named(tmp_path):
    with pytest.raises(dtx.InvalidArgument, match="no cluster directory"):
        dtx.Client.from_cluster_dir(tmp_path / "missing")
    with pytest.raises(dtx.InvalidArgument,
                       match=re.escape(f"{tmp_path / 'cluster.conf'}: no such file")):
        dtx.Client.from_cluster_dir(tmp_path)
    with pytest.raises(TypeError, match="takes the addresses and TLS from the directory"):
        dtx.Client.from_cluster_dir(tmp_path, tls=None)


def _roundtrip(c: dtx.Client, key: bytes) -> bytes:
    c.run(lambda tx: tx.put(key, b"v-" + key))
    return c.run(lambda tx: tx.get(key))


def test_from_cluster_dir_finds_a_tls_cluster(cluster):
    with dtx.Client.from_cluster_dir(cluster.dir, timeout=5.0) as c:
        assert [p.address for p in c._coordinators] == [cluster.coordinator]
        assert c._tls is not None and c._tls[1] == str(pathlib.Path(cluster.dir) / "certs" /
                                                      "ca.crt")
        assert _roundtrip(c, b"from-cluster-dir") == b"v-from-cluster-dir"


def test_from_cluster_dir_with_another_certificate_name(cluster):
    r = subprocess.run([str(dtxctl_path()), "certs", "create-client", "app", "--dir",
                        str(pathlib.Path(cluster.dir) / "certs")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    with dtx.Client.from_cluster_dir(str(cluster.dir), name="app") as c:
        assert c._tls is not None
        assert _roundtrip(c, b"as-app") == b"v-as-app"
    with pytest.raises(dtx.InvalidArgument, match="dtxctl certs create-client nobody"):
        dtx.Client.from_cluster_dir(cluster.dir, name="nobody")
