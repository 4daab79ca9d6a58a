#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "common/check.h"
#include "common/log.h"

namespace dtx {

namespace {

// The first byte of every TLS record that opens a connection: a handshake
// record (ClientHello, ServerHello). An alert (0x15) may also open a server's
// answer when it refuses the ClientHello.
constexpr uint8_t kTlsHandshakeRecord = 0x16;
constexpr uint8_t kTlsAlertRecord = 0x15;
// Largest chunk SSL_read is asked for at once (one TLS record's payload).
constexpr size_t kReadChunkBytes = 16u << 10;
constexpr const char* kTlsCipherSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr int kVerifyDepthMax = 4;

// Empties this thread's OpenSSL error queue, as SSL_get_error() needs before
// an SSL call. ERR_clear_error() resets all 16 slots whether or not any is in
// use: about 2,100 instructions (callgrind), a quarter of what encrypting a
// small record costs, and it ran twice per message. ERR_peek_error() is what
// SSL_get_error() itself consults, so when it finds nothing the queue is as
// good as empty.
inline void ClearOpenSslErrors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

// The oldest error of this thread's OpenSSL queue, as text; clears the queue.
std::string TakeOpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

Status CheckReadable(const std::string& path, const char* what) {
  if (path.empty()) return Status::InvalidArgument(std::string("no ") + what + " file given");
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    return Status::InvalidArgument(std::string("cannot read the ") + what + " file '" + path +
                                   "': " + std::strerror(errno));
  }
  std::fclose(f);
  return Status::OK();
}

std::string NameEntry(const X509_NAME* name, int nid) {
  if (name == nullptr) return "";
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

// The principal a certificate names: CN and OU (common/identity.h).
PeerIdentity IdentityOf(const X509* cert) {
  PeerIdentity id;
  if (cert == nullptr) return id;
  const X509_NAME* subject = X509_get_subject_name(cert);
  id.name = NameEntry(subject, NID_commonName);
  id.kind = ParsePrincipalKind(NameEntry(subject, NID_organizationalUnitName));
  return id;
}

std::string FormatTime(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// "CN=bench, OU=client, issuer CN=dtx-ca"
std::string DescribeCert(const X509* cert) {
  if (cert == nullptr) return "no certificate";
  const X509_NAME* subject = X509_get_subject_name(cert);
  std::string out = "CN=" + NameEntry(subject, NID_commonName);
  std::string ou = NameEntry(subject, NID_organizationalUnitName);
  if (!ou.empty()) out += ", OU=" + ou;
  out += ", issuer CN=" + NameEntry(X509_get_issuer_name(cert), NID_commonName);
  return out;
}

// One line for a failed verification of the peer's certificate `cert`.
std::string DescribeVerifyError(int err, const X509* cert, TlsSide side) {
  const std::string whose = side == TlsSide::kServer ? "client certificate" : "server certificate";
  switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return whose + " not signed by the cluster CA (" + DescribeCert(cert) + ")";
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return whose + " expired on " + FormatTime(X509_get0_notAfter(cert)) + " (" +
             DescribeCert(cert) + ")";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return whose + " not valid before " + FormatTime(X509_get0_notBefore(cert)) + " (" +
             DescribeCert(cert) + ")";
    case X509_V_ERR_INVALID_PURPOSE:
      return whose + " not issued for this use (" +
             (side == TlsSide::kServer ? "no clientAuth"
                                       : "no serverAuth: a client's certificate") +
             "; " + DescribeCert(cert) + ")";
    default:
      return whose + " refused: " + X509_verify_cert_error_string(err) + " (" + DescribeCert(cert) +
             ")";
  }
}

// Logs a warning when our own certificate would not verify against the
// cluster CA (expired, another CA's): every peer will refuse it.
void WarnIfUnverifiable(SSL_CTX* ctx, const TlsFiles& files) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  X509_STORE_CTX* store_ctx = X509_STORE_CTX_new();
  if (cert == nullptr || store_ctx == nullptr) {
    X509_STORE_CTX_free(store_ctx);
    return;
  }
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs(ctx, &chain);
  if (X509_STORE_CTX_init(store_ctx, SSL_CTX_get_cert_store(ctx), cert, chain) == 1 &&
      X509_verify_cert(store_ctx) != 1) {
    std::string why =
        DescribeVerifyError(X509_STORE_CTX_get_error(store_ctx), cert, TlsSide::kClient);
    // "server certificate ..." -> "our certificate ...": either side may hold it.
    why.replace(0, why.find(' '), "our");
    DTX_LOG_WARN("TLS: {} (file '{}', CA '{}'): peers will refuse it", why, files.cert_file,
                 files.ca_file);
  }
  X509_STORE_CTX_free(store_ctx);
  ERR_clear_error();
}

}  // namespace

// ---- TlsContext ----

Result<std::shared_ptr<const TlsContext>> TlsContext::Create(const TlsFiles& files, TlsSide side,
                                                             TlsContextOptions options) {
  DTX_RETURN_IF_ERROR(CheckReadable(files.ca_file, "cluster CA"));
  const bool has_cert = !files.cert_file.empty() || !files.key_file.empty();
  if (side == TlsSide::kServer || has_cert) {
    DTX_RETURN_IF_ERROR(CheckReadable(files.cert_file, "certificate"));
    DTX_RETURN_IF_ERROR(CheckReadable(files.key_file, "private key"));
  }
  ERR_clear_error();
  SSL_CTX* raw = SSL_CTX_new(side == TlsSide::kServer ? TLS_server_method() : TLS_client_method());
  if (raw == nullptr) return Status::Internal("SSL_CTX_new: " + TakeOpenSslError());
  // Owned by `context` from here on: every early return frees it.
  std::shared_ptr<TlsContext> context(new TlsContext(raw, side, options));
  SSL_CTX* ctx = context->ctx_;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return Status::Internal("cannot restrict TLS to 1.3: " + TakeOpenSslError());
  }
  // AES-128-GCM first (OpenSSL's default puts AES-256 first): the cheapest
  // AEAD on CPUs with AES instructions, and every record of every call pays
  // it. All three suites of TLS 1.3 stay allowed.
  if (SSL_CTX_set_ciphersuites(ctx, kTlsCipherSuites) != 1) {
    return Status::Internal("cannot set the TLS 1.3 cipher suites: " + TakeOpenSslError());
  }
  // The cluster CA is the only trust anchor (no SSL_CTX_set_default_verify_paths).
  if (SSL_CTX_load_verify_locations(ctx, files.ca_file.c_str(), nullptr) != 1) {
    return Status::InvalidArgument("the cluster CA file '" + files.ca_file +
                                   "' holds no usable PEM certificate: " + TakeOpenSslError());
  }
  SSL_CTX_set_verify_depth(ctx, kVerifyDepthMax);
  if (has_cert || side == TlsSide::kServer) {
    if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
      return Status::InvalidArgument("the certificate file '" + files.cert_file +
                                     "' holds no usable PEM certificate: " + TakeOpenSslError());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        return Status::InvalidArgument("the private key '" + files.key_file +
                                       "' does not match the certificate '" + files.cert_file +
                                       "'");
      }
      return Status::InvalidArgument("the private key file '" + files.key_file +
                                     "' holds no usable PEM key: " + TakeOpenSslError());
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return Status::InvalidArgument("the private key '" + files.key_file +
                                     "' does not match the certificate '" + files.cert_file + "'");
    }
    context->local_ = IdentityOf(SSL_CTX_get0_certificate(ctx));
    WarnIfUnverifiable(ctx, files);
  }
  if (side == TlsSide::kServer) {
    // Tell clients which CA their certificate must come from.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.ca_file.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (options.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
    // No session resumption: connections are long-lived, and a ticket would
    // cost an encryption per handshake for nothing.
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  ERR_clear_error();
  return std::shared_ptr<const TlsContext>(std::move(context));
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::string TlsExpectedPeer::Describe() const {
  if (!name.empty()) {
    return kind == PrincipalKind::kNone ? name
                                        : name + " (" + std::string(PrincipalKindName(kind)) + ")";
  }
  if (kind != PrincipalKind::kNone) return "any " + std::string(PrincipalKindName(kind));
  return "any cluster principal";
}

// ---- TlsSession ----

std::unique_ptr<TlsSession> TlsSession::Create(std::shared_ptr<const TlsContext> context,
                                               TlsExpectedPeer expected) {
  DTX_CHECK(context != nullptr);
  return std::unique_ptr<TlsSession>(new TlsSession(std::move(context), std::move(expected)));
}

TlsSession::TlsSession(std::shared_ptr<const TlsContext> context, TlsExpectedPeer expected)
    : context_(std::move(context)), expected_(std::move(expected)) {
  ERR_clear_error();
  ssl_ = SSL_new(context_->ctx_);
  DTX_CHECK_MSG(ssl_ != nullptr, "SSL_new failed (out of memory?)");
  in_bio_ = BIO_new(BIO_s_mem());
  out_bio_ = BIO_new(BIO_s_mem());
  DTX_CHECK_MSG(in_bio_ != nullptr && out_bio_ != nullptr, "BIO_new failed (out of memory?)");
  // An empty memory BIO means "no data yet", not EOF.
  BIO_set_mem_eof_return(in_bio_, -1);
  BIO_set_mem_eof_return(out_bio_, -1);
  SSL_set_bio(ssl_, in_bio_, out_bio_);  // ssl_ owns both
  SSL_set_app_data(ssl_, this);
  SSL_set_verify(ssl_, SSL_CTX_get_verify_mode(context_->ctx_), &TlsSession::VerifyCallback);
  if (context_->side() == TlsSide::kServer) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    if (!expected_.name.empty()) SSL_set_tlsext_host_name(ssl_, expected_.name.c_str());
  }
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

int TlsSession::VerifyCallback(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok == 1) return 1;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* self = ssl == nullptr ? nullptr : static_cast<TlsSession*>(SSL_get_app_data(ssl));
  if (self != nullptr && self->verify_failure_.empty()) {
    self->verify_failure_ =
        DescribeVerifyError(X509_STORE_CTX_get_error(store), X509_STORE_CTX_get_current_cert(store),
                            self->context_->side());
  }
  return 0;
}

Status TlsSession::Start() {
  DTX_CHECK(context_->side() == TlsSide::kClient);
  DTX_CHECK(state_ == State::kNew);
  state_ = State::kHandshaking;
  return DriveHandshake();
}

Status TlsSession::Receive(const uint8_t* data, size_t len, std::vector<uint8_t>* plaintext) {
  DTX_CHECK(plaintext != nullptr);
  if (state_ == State::kFailed) return failure_;
  if (len == 0) return Status::OK();
  if (!received_any_) {
    received_any_ = true;
    char first[8];
    std::snprintf(first, sizeof(first), "0x%02x", data[0]);
    if (context_->side() == TlsSide::kServer && data[0] != kTlsHandshakeRecord) {
      return Fail(Status::Unavailable(std::string("plaintext sent to a TLS port: the first byte ") +
                                      first +
                                      " is not a TLS handshake record (a client without TLS?)"));
    }
    if (context_->side() == TlsSide::kClient && data[0] != kTlsHandshakeRecord &&
        data[0] != kTlsAlertRecord) {
      return Fail(Status::Unavailable(std::string("the server did not answer in TLS (first byte ") +
                                      first + "): a plaintext port?"));
    }
  }
  if (BIO_write(in_bio_, data, static_cast<int>(len)) != static_cast<int>(len)) {
    return Fail(Status::Internal("cannot buffer received TLS bytes: " + TakeOpenSslError()));
  }
  if (state_ == State::kNew) state_ = State::kHandshaking;  // a server's first bytes
  if (state_ == State::kHandshaking) {
    Status st = DriveHandshake();
    if (!st.ok() || state_ != State::kEstablished) return st;
  }
  return ReadPlaintext(plaintext);
}

Status TlsSession::ReceiveEof() {
  if (state_ == State::kFailed) return failure_;
  if (state_ == State::kEstablished) return Status::OK();
  if (context_->side() == TlsSide::kClient) {
    return Fail(Status::Unavailable(
        "the server closed the connection during the TLS handshake (a plaintext port, or it "
        "refused us: see its log)"));
  }
  return Fail(Status::Unavailable(
      received_any_ ? "the client closed the connection during the TLS handshake"
                    : "the client closed the connection before the TLS handshake"));
}

Status TlsSession::DriveHandshake() {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    state_ = State::kEstablished;
    return CheckPeer();
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::OK();
  return FailFromOpenSsl(r, "handshake");
}

Status TlsSession::CheckPeer() {
  const X509* cert = SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr) {
    // Possible only on a server that does not require client certificates.
    DTX_CHECK(context_->side() == TlsSide::kServer && !context_->options().require_client_cert);
    peer_ = PeerIdentity{};
    return Status::OK();
  }
  peer_ = IdentityOf(cert);
  // On a client, our Finished (and certificate) are already in the output
  // when the check below fails: they are dropped, so that the server never
  // counts a connection we refuse as established.
  if (!peer_.authenticated() || peer_.name.empty()) {
    if (context_->side() == TlsSide::kClient) (void)BIO_reset(out_bio_);
    return Fail(Status::PermissionDenied(
        std::string(context_->side() == TlsSide::kServer ? "client" : "server") +
        " certificate names no dtx principal (want CN = a name, OU = participant, coordinator, "
        "admin or client; " +
        DescribeCert(cert) + ")"));
  }
  if (context_->side() == TlsSide::kClient && !expected_.Matches(peer_)) {
    (void)BIO_reset(out_bio_);
    return Fail(Status::PermissionDenied("server name mismatch: expected " + expected_.Describe() +
                                         ", the server's certificate names " + peer_.name + " (" +
                                         std::string(PrincipalKindName(peer_.kind)) + ")"));
  }
  return Status::OK();
}

Status TlsSession::ReadPlaintext(std::vector<uint8_t>* plaintext) {
  // Through a stack buffer: growing *plaintext by a record's worth before
  // each SSL_read would zero-fill 16 KiB per record (and once more for the
  // read that finds no record).
  uint8_t chunk[kReadChunkBytes];
  for (;;) {
    size_t n = 0;
    ClearOpenSslErrors();
    int r = SSL_read_ex(ssl_, chunk, sizeof(chunk), &n);
    if (r == 1) {
      plaintext->insert(plaintext->end(), chunk, chunk + n);
      // Nothing decrypted waits and no received byte is left: done, without
      // the call that would only report SSL_ERROR_WANT_READ (a measurable
      // share of a small message's cost). A partial record stays in the BIO
      // for the next Receive().
      if (SSL_pending(ssl_) == 0 && BIO_ctrl_pending(in_bio_) == 0) return Status::OK();
      continue;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::OK();
    if (e == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return Status::OK();
    }
    return FailFromOpenSsl(r, "read");
  }
}

Status TlsSession::Send(const uint8_t* data, size_t len) {
  if (state_ == State::kFailed) return failure_;
  DTX_CHECK_MSG(state_ == State::kEstablished, "TlsSession::Send before the handshake completed");
  if (len == 0) return Status::OK();
  ClearOpenSslErrors();
  size_t written = 0;
  int r = SSL_write_ex(ssl_, data, len, &written);
  if (r != 1) return FailFromOpenSsl(r, "write");
  // A memory BIO takes everything: no partial writes.
  DTX_CHECK(written == len);
  return Status::OK();
}

size_t TlsSession::TakeOutput(std::string* out) {
  DTX_CHECK(out != nullptr);
  const size_t pending = BIO_ctrl_pending(out_bio_);
  if (pending == 0) return 0;
  const size_t old = out->size();
  out->resize(old + pending);
  int n = BIO_read(out_bio_, out->data() + old, static_cast<int>(pending));
  DTX_CHECK(n == static_cast<int>(pending));
  return pending;
}

bool TlsSession::has_output() const { return BIO_ctrl_pending(out_bio_) > 0; }

bool TlsSession::has_pending_input() const {
  return BIO_ctrl_pending(in_bio_) > 0 || SSL_has_pending(ssl_) == 1;
}

Status TlsSession::Fail(Status why) {
  DTX_CHECK(!why.ok());
  if (state_ != State::kFailed) {
    state_ = State::kFailed;
    failure_ = std::move(why);
  }
  return failure_;
}

Status TlsSession::FailFromOpenSsl(int ret, const char* during) {
  const int ssl_error = SSL_get_error(ssl_, ret);
  if (!verify_failure_.empty()) {
    ERR_clear_error();
    return Fail(Status::PermissionDenied(verify_failure_));
  }
  const unsigned long e = ERR_peek_error();
  if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
    return Fail(Status::Unavailable(std::string("TLS ") + during + " failed: unexpected EOF"));
  }
  const bool ssl_lib = ERR_GET_LIB(e) == ERR_LIB_SSL;
  const int reason = ERR_GET_REASON(e);
  std::string detail = TakeOpenSslError();
  if (ssl_lib) {
    switch (reason) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return Fail(Status::PermissionDenied(
            "no client certificate: this listener requires one signed by the cluster CA"));
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return Fail(Status::PermissionDenied(
            "the peer requires a client certificate and we presented none"));
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return Fail(Status::PermissionDenied(
            "the peer refused our certificate: not signed by the CA it trusts (another cluster's "
            "CA?)"));
      case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return Fail(Status::PermissionDenied("the peer refused our certificate: expired"));
      case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        return Fail(Status::PermissionDenied(
            "the peer refused our certificate: not issued for this use (its extendedKeyUsage)"));
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        return Fail(Status::PermissionDenied(std::string("the peer refused our certificate (") +
                                             ERR_reason_error_string(e) + ")"));
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_HTTP_REQUEST:
      case SSL_R_PACKET_LENGTH_TOO_LONG:
        return Fail(
            Status::Unavailable("the peer does not speak TLS (a plaintext peer?): " + detail));
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
        return Fail(Status::Unavailable("the peer does not speak TLS 1.3: " + detail));
      default: break;
    }
  }
  return Fail(Status::Unavailable(std::string("TLS ") + during + " failed: " + detail));
}

}  // namespace dtx
