"""Client.from_cluster_dir, Client.from_cluster_file and the cluster.conf
reader (dtx/cluster_dir.py):
strict as tools/cluster_config.cc (each malformed file is checked against
dtxctl, which reads it with the C++ parser), and used against real clusters."""

import pathlib
import re
import subprocess

import pytest

import dtx
from conftest import dtxctl_path
from dtx.cluster_dir import Node, load_cluster_conf, parse_cluster_conf, parse_cluster_file


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
     "line 2: expected 'admin=HOST:PORT', 'peer=HOST:PORT' or 'metrics=HOST:PORT' after the "
     "address, got 'admin'"),
    (_C0 + "participant-0 127.0.0.1:7100 colour=blue\n", "line 2: expected 'admin=HOST:PORT'"),
    ("coordinator-0\n" + _P0, "line 1: expected 'NAME ADDRESS' or 'SETTING VALUE'"),
    ("tls maybe\n" + _C0 + _P0, "line 1: tls must be 'on' or 'off'"),
    ("tls off\ntls on\n" + _C0 + _P0, "line 2: tls given twice"),
    ("data /a\ndata /b\n" + _C0 + _P0, "line 2: data given twice"),
    ("coordinator-0 127.0.0.1:7101 metrics=\n" + _P0, "line 1: empty metrics address"),
    (_C0 + "participant-0 127.0.0.1:7100 metrics=127.0.0.1:7101\n",
     "line 2: address 127.0.0.1:7101 used by both coordinator-0 and participant-0"),
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


def test_cluster_file_settings_and_metrics_addresses():
    f = parse_cluster_file("tls on\ncerts /etc/dtx/my certs  # spaces\ndata nodes\n"
                           "coordinator-0 10.0.0.1:7000 metrics=10.0.0.1:9100 peer=10.0.0.1:7100\n"
                           "participant-0 10.0.0.2:7000\n")
    assert (f.tls, f.certs, f.data) == (True, "/etc/dtx/my certs", "nodes")
    assert f.nodes[0].metrics == "10.0.0.1:9100" and f.nodes[0].peer == "10.0.0.1:7100"
    plain = parse_cluster_file(_C0 + _P0)
    assert (plain.tls, plain.certs, plain.data) == (None, None, None)
    for text, error in [("tls on\n" + _C0 + _P0, "tls on without a certs line"),
                        ("certs c\n" + _C0 + _P0, "certs without a tls line")]:
        with pytest.raises(dtx.InvalidArgument, match=error):
            parse_cluster_file(text)


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


def test_from_cluster_file_with_its_own_tls_lines_and_beside_security_conf(cluster, tmp_path):
    # The cluster's own cluster.conf: TLS from the security.conf beside it.
    conf = pathlib.Path(cluster.dir) / "cluster.conf"
    with dtx.Client.from_cluster_file(conf, timeout=5.0) as c:
        assert _roundtrip(c, b"from-cluster-file") == b"v-from-cluster-file"
    # A copy elsewhere that says so itself (as on an application host).
    nodes = [line for line in conf.read_text().splitlines() if line and line[0] != "#"]
    hosts = tmp_path / "hosts.conf"
    hosts.write_text("tls on\ncerts " + str(pathlib.Path(cluster.dir) / "certs") + "\n" +
                     "\n".join(nodes) + "\n")
    with dtx.Client.from_cluster_file(str(hosts), timeout=5.0) as c:
        assert c._tls is not None
        assert _roundtrip(c, b"from-hosts-file") == b"v-from-hosts-file"
    # Neither: refused, not plaintext.
    bare = tmp_path / "bare.conf"
    bare.write_text("\n".join(nodes) + "\n")
    with pytest.raises(dtx.InvalidArgument, match="no 'tls on' or 'tls off' line"):
        dtx.Client.from_cluster_file(bare)
    with pytest.raises(dtx.InvalidArgument, match="no cluster file"):
        dtx.Client.from_cluster_file(tmp_path / "missing.conf")
