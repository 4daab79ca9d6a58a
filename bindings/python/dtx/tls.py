"""TLS 1.3 for the dtx client: :class:`TLS` (which files) and the connection
code the client's sockets use.

A TLS cluster (``dtxctl cluster up`` without ``--insecure``) requires a client
certificate signed by the cluster CA on every listener (common/tls.h). The
client checks the other way round: the server's certificate must be signed by
the same CA and name the expected kind of node in its subject OU
(``coordinator`` or ``participant``, common/certs.h). The client knows
addresses, not node names, so host names are not checked; the kind is, after
the handshake.

Errors are made to say what is wrong (the wording follows common/tls.cc, which
the nodes log on their side): a server certificate from another CA, an expired
one, a plaintext server on a TLS connection, a TLS server reached without
``tls=``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import ssl
from typing import Optional, Tuple, Union

from thrift.Thrift import TApplicationException

from dtx.cluster_dir import read_conf_text
from dtx.errors import InvalidArgument

# DIR/security.conf: written by `dtxctl cluster up`, grammar in
# tools/cluster_config.h (ClusterSecurity): "tls on|off", "certs PATH" with PATH
# relative to DIR unless absolute, '#' starts a comment.
SECURITY_CONF_FILE = "security.conf"
_SECURITY_CONF_BYTES_MAX = 64 * 1024
# common/certs.h kPrincipalNameBytesMax and its alphabet.
_PRINCIPAL_NAME = re.compile(r"[a-z0-9-]{1,64}")

# First byte of a TLS record: handshake (ClientHello/ServerHello) or alert.
# A dtx reply's first byte is the high byte of a frame length; 0x15/0x16 would
# mean a frame of more than 350 MB, which no node sends.
_TLS_RECORD_FIRST_BYTES = (0x15, 0x16)
_TLS_MAJOR_VERSION_BYTE = 0x03

REQUIRES_TLS = ("the server requires TLS: pass tls=dtx.TLS(ca=..., cert=..., key=...) "
                "(or dtx.TLS.from_cluster_dir(DIR))")

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that mean "not signed by this CA".
_NOT_OUR_CA_CODES = {
    2,   # unable to get issuer certificate
    7,   # certificate signature failure
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
}
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_INVALID_PURPOSE = 26

# Alerts a server sends when it refuses our certificate (OpenSSL reason names).
_REFUSED_OUR_CERT = {
    "TLSV1_ALERT_UNKNOWN_CA":
        "the server refused our certificate: not signed by the CA it trusts (another cluster's "
        "CA?)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server refused our certificate: expired",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE":
        "the server refused our certificate: not issued for this use (its extendedKeyUsage)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused our certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        "the server requires a client certificate and we presented none",
    "TLSV1_ALERT_ACCESS_DENIED": "the server refused our certificate (access denied)",
}


@dataclasses.dataclass(frozen=True)
class TLS:
    """The files a TLS client needs, as paths: the cluster CA certificate
    (``ca``) and this client's certificate and key (``cert``, ``key``), PEM,
    as ``dtxctl certs`` writes them. The files are read when a
    :class:`dtx.Client` is made.

    ``dtxctl cluster up`` writes them to ``DIR/certs`` (``ca.crt``,
    ``client.crt``, ``client.key``); :meth:`from_cluster_dir` finds them.
    """

    ca: str
    cert: str
    key: str

    def __post_init__(self) -> None:
        for field in ("ca", "cert", "key"):
            value = getattr(self, field)
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"TLS {field} is a path, not {type(value).__name__}")
            value = os.fspath(value)
            if not value:
                raise InvalidArgument(f"TLS {field} path is empty")
            object.__setattr__(self, field, value)

    @classmethod
    def from_cluster_dir(cls, directory: Union[str, os.PathLike],
                         name: str = "client") -> Optional["TLS"]:
        """The TLS files of principal ``name`` in a cluster directory made by
        ``dtxctl cluster up``, or ``None`` when that cluster is plaintext
        (``security.conf`` says ``tls off``, or the directory predates TLS and
        has no ``security.conf``). Raises :class:`InvalidArgument` for a
        missing directory, a malformed ``security.conf``, or a TLS cluster
        without a certificate for ``name``."""
        directory = os.fspath(directory)
        if not isinstance(name, str) or not _PRINCIPAL_NAME.fullmatch(name):
            raise InvalidArgument(f"certificate name must match [a-z0-9-]{{1,64}}, got {name!r}")
        if not os.path.isdir(directory):
            raise InvalidArgument(f"no cluster directory {directory!r}")
        path = os.path.join(directory, SECURITY_CONF_FILE)
        text = read_conf_text(path, _SECURITY_CONF_BYTES_MAX)
        if text is None:
            return None
        tls_on, certs = parse_security_conf(text, path)
        if not tls_on:
            return None
        return cls.from_certs_dir(os.path.join(directory, certs), name=name)

    @classmethod
    def from_certs_dir(cls, certs: Union[str, os.PathLike], name: str = "client") -> "TLS":
        """The TLS files of principal ``name`` in a certificate directory
        (common/certs.h layout: ``ca.crt``, ``NAME.crt``, ``NAME.key``).
        Raises :class:`InvalidArgument` for a bad name or a missing
        certificate or key."""
        certs = os.fspath(certs)
        if not isinstance(name, str) or not _PRINCIPAL_NAME.fullmatch(name):
            raise InvalidArgument(f"certificate name must match [a-z0-9-]{{1,64}}, got {name!r}")
        found = cls(ca=os.path.join(certs, "ca.crt"), cert=os.path.join(certs, name + ".crt"),
                    key=os.path.join(certs, name + ".key"))
        if not os.path.exists(found.cert) or not os.path.exists(found.key):
            raise InvalidArgument(
                f"the cluster uses TLS but {certs} has no certificate and key for "
                f"{name!r} (make one: dtxctl certs create-client {name} --dir {certs})")
        return found


def parse_security_conf(text: str, path: str = SECURITY_CONF_FILE) -> Tuple[bool, str]:
    """``(tls, certs)`` from the text of a security.conf (grammar:
    tools/cluster_config.h ClusterSecurity); ``certs`` is as written, "" when
    absent. Raises :class:`InvalidArgument` naming the line."""
    tls: Optional[bool] = None
    certs: Optional[str] = None
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.split("#", 1)[0].strip(" \t\r")
        if not line:
            continue
        key = re.match(r"[^ \t]*", line).group(0)
        value = line[len(key):].strip(" \t")
        if not value:
            raise InvalidArgument(f"{path} line {line_no}: expected 'KEY VALUE'")
        if key == "tls":
            if tls is not None:
                raise InvalidArgument(f"{path} line {line_no}: tls given twice")
            if value not in ("on", "off"):
                raise InvalidArgument(f"{path} line {line_no}: tls must be 'on' or 'off'")
            tls = value == "on"
        elif key == "certs":
            if certs is not None:
                raise InvalidArgument(f"{path} line {line_no}: certs given twice")
            certs = value
        else:
            raise InvalidArgument(
                f"{path} line {line_no}: unknown key '{key}' (expected tls or certs)")
    if tls is None:
        raise InvalidArgument(f"{path}: no tls line")
    if tls and not certs:
        raise InvalidArgument(f"{path}: tls on without certs")
    return tls, certs or ""


def make_context(tls: TLS) -> ssl.SSLContext:
    """An SSLContext for dialing dtx nodes: TLS 1.3 only, the server's
    certificate verified against ``tls.ca`` (the kind is checked after the
    handshake, see :func:`connect`), ours presented. Raises
    :class:`InvalidArgument` for unreadable or mismatched files."""
    if not isinstance(tls, TLS):
        raise TypeError(f"tls must be a dtx.TLS, not {type(tls).__name__}")
    for what, path in (("cluster CA", tls.ca), ("certificate", tls.cert), ("key", tls.key)):
        if not os.access(path, os.R_OK):
            reason = "no such file" if not os.path.exists(path) else "not readable"
            raise InvalidArgument(f"cannot read the {what} file '{path}': {reason}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # addresses, not names: the OU is checked instead
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=tls.ca)
    except (ssl.SSLError, OSError) as e:
        raise InvalidArgument(
            f"the cluster CA file '{tls.ca}' holds no usable PEM certificate: {e}") from None
    try:
        context.load_cert_chain(certfile=tls.cert, keyfile=tls.key)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise InvalidArgument(
                f"the key '{tls.key}' does not match the certificate '{tls.cert}'") from None
        raise InvalidArgument(
            f"cannot load the certificate '{tls.cert}' and key '{tls.key}': {e}") from None
    except OSError as e:
        raise InvalidArgument(
            f"cannot load the certificate '{tls.cert}' and key '{tls.key}': {e}") from None
    return context


class ConnectError(Exception):
    """A TLS connection could not be made; the message says why (internal:
    the client turns it into :class:`dtx.TLSError`)."""


class HandshakeTimeout(ConnectError):
    """No handshake within the timeout: maybe only an overloaded server, so
    the client reports it as :class:`dtx.Unavailable`, not as a TLS error."""


def connect(sock: socket.socket, context: ssl.SSLContext, ca_path: str,
            expected_kind: str) -> ssl.SSLSocket:
    """Runs the TLS handshake on the connected ``sock`` (its timeout bounds
    the handshake) and checks that the server's certificate names a node of
    ``expected_kind``. Returns the TLS socket; on failure closes ``sock`` and
    raises :class:`ConnectError`."""
    try:
        tls_sock = context.wrap_socket(sock, do_handshake_on_connect=True)
    except ssl.SSLCertVerificationError as e:
        sock.close()
        raise ConnectError(describe_verify_error(e, ca_path)) from None
    except ssl.SSLError as e:
        sock.close()
        raise ConnectError(describe_handshake_error(e)) from None
    except (socket.timeout, TimeoutError):
        sock.close()
        raise HandshakeTimeout("no TLS handshake within the timeout (a plaintext server "
                               "waiting for a request, or an overloaded one?)") from None
    except OSError as e:
        sock.close()
        if isinstance(e, (ConnectionResetError, BrokenPipeError)):
            raise ConnectError(_CLOSED_DURING_HANDSHAKE) from None
        raise ConnectError(f"TLS handshake failed: {e.strerror or e}") from None
    if tls_sock.version() != "TLSv1.3":  # minimum_version makes this impossible
        tls_sock.close()
        raise ConnectError(f"the server negotiated {tls_sock.version()}, not TLS 1.3")
    cert = tls_sock.getpeercert()
    common_name = _subject_entry(cert, "commonName")
    unit = _subject_entry(cert, "organizationalUnitName")
    if unit != expected_kind:
        tls_sock.close()
        names = f"{common_name or '(no CN)'} (OU {unit or 'none'})"
        raise ConnectError(f"the server's certificate names {names}, not a {expected_kind}: "
                           f"is this the address of a {expected_kind}?")
    return tls_sock


# As the C++ client says it (common/tls.cc TlsSession::ReceiveEof): a plaintext
# server closes on the ClientHello, and so does a TLS server that refuses the
# connection (every connection busy at its cap, shutting down); only its log
# tells which.
_CLOSED_DURING_HANDSHAKE = (
    "the server closed the connection during the TLS handshake without answering in TLS: a "
    "plaintext server (a cluster started with --insecure?), or it refused the connection (at "
    "its connection cap, or stopping: see its log)")


def _subject_entry(cert, key: str) -> str:
    for rdn in (cert or {}).get("subject", ()):
        for k, v in rdn:
            if k == key:
                return v
    return ""


def describe_verify_error(e: ssl.SSLCertVerificationError, ca_path: str) -> str:
    """Why the server's certificate did not verify against ``ca_path``."""
    code, detail = e.verify_code, e.verify_message or str(e)
    if code in _NOT_OUR_CA_CODES:
        return f"server certificate not signed by the given CA '{ca_path}' ({detail})"
    if code == _CERT_HAS_EXPIRED:
        return "server certificate expired (renew it: dtxctl certs create-node NAME --overwrite)"
    if code == _CERT_NOT_YET_VALID:
        return "server certificate not yet valid (a clock behind the one that issued it?)"
    if code == _INVALID_PURPOSE:
        return ("server certificate not issued for serving (no serverAuth: a client's "
                "certificate?)")
    return f"server certificate rejected: {detail}"


def describe_handshake_error(e: ssl.SSLError) -> str:
    """A handshake failure that is not our verdict on the server's certificate."""
    reason = getattr(e, "reason", None) or ""
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or \
            reason in ("UNEXPECTED_EOF_WHILE_READING", "EOF"):
        return _CLOSED_DURING_HANDSHAKE
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                  "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
        return "the server did not answer in TLS: a plaintext server (a cluster started with " \
               "--insecure?)"
    if reason in _REFUSED_OUR_CERT:
        return _REFUSED_OUR_CERT[reason]
    if reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"):
        return "the server does not speak TLS 1.3"
    return f"TLS handshake failed: {reason or e}"


def refusal_from_alert(e: ssl.SSLError) -> str:
    """What an alert received after the handshake says about our certificate,
    or "". With TLS 1.3 the server judges our certificate after our side of
    the handshake is done, so its refusal arrives on the first read."""
    return _REFUSED_OUR_CERT.get(getattr(e, "reason", None) or "", "")


# How long a diagnostic handshake waits for the server's verdict on our
# certificate: one round trip, with room for a loaded host.
_VERDICT_WAIT_S_MAX = 1.0


def refusal_after_handshake(host: str, port: int, context: ssl.SSLContext, ca_path: str,
                            expected_kind: str, timeout_s: float) -> str:
    """Why the server refuses this client, learnt from a fresh connection
    that finishes the handshake and sends nothing, so that the server's alert
    is not lost to a reset; "" if it sends none within a round trip or so
    (then it did not refuse our certificate). Used only to explain a TLS
    connection closed before its first answer."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return ""
    try:
        tls_sock = connect(sock, context, ca_path, expected_kind)
    except ConnectError as e:
        return str(e)
    try:
        tls_sock.settimeout(min(timeout_s, _VERDICT_WAIT_S_MAX))
        tls_sock.recv(1)
    except ssl.SSLError as e:
        return refusal_from_alert(e)
    except OSError:
        pass
    finally:
        tls_sock.close()
    return ""


def describe_read_error(e: ssl.SSLError) -> str:
    """An error on an established TLS connection."""
    reason = getattr(e, "reason", None) or ""
    if reason in _REFUSED_OUR_CERT:
        return _REFUSED_OUR_CERT[reason]
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the TLS connection"
    return f"TLS error: {reason or e}"


def speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether the server at host:port answers a TLS ClientHello in TLS. Used
    only to explain a plaintext connection that was closed without an answer:
    a TLS listener closes a connection whose first byte is not a TLS record
    (common/tls.cc). Any TLS answer (a finished handshake, or an alert) counts;
    silence, a close, or bytes that are not TLS do not."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe: nothing is sent over it
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return False
    try:
        with context.wrap_socket(sock, do_handshake_on_connect=True):
            return True
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # closed: no TLS answer
        return False
    except ssl.SSLError as e:
        return getattr(e, "reason", None) not in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                                  "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")
    except OSError:
        return False
    finally:
        sock.close()


# A dtx TLS listener answers a plaintext call once, in plaintext, with a
# TApplicationException whose message starts with this (common/rpc_server.cc
# TlsRequiredReply), then closes.
_TLS_REQUIRED_REPLY = "this port requires TLS"


def is_tls_required_reply(e: BaseException) -> bool:
    """Whether ``e`` is a dtx TLS listener's answer to a plaintext call."""
    return isinstance(e, TApplicationException) and \
        str(e.message or "").startswith(_TLS_REQUIRED_REPLY)


def looks_like_tls(first_bytes: bytes) -> bool:
    """Whether the first bytes a server sent on a plaintext connection are a
    TLS record (a TLS server answering a plaintext client with an alert)."""
    return len(first_bytes) >= 2 and first_bytes[0] in _TLS_RECORD_FIRST_BYTES and \
        first_bytes[1] == _TLS_MAJOR_VERSION_BYTE
