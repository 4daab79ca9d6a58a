// TLS 1.3 for the libuv transport (RpcServer, PeerChannel): a TlsContext per
// process side (the cluster CA, our certificate and key) and a TlsSession per
// connection, an OpenSSL engine over two memory BIOs. The session owns no
// socket and no thread: the transport feeds it the bytes it read and writes
// out the bytes it takes from it. Certificates: common/certs.h.
//
// Trust: the cluster CA (TlsFiles::ca_file) is the only trust anchor; the
// system's CAs are never consulted. Every certificate the CA signs names a
// principal (common/identity.h): subject CN = its name ("participant-2"),
// subject OU = its kind ("participant", "coordinator", "admin", "client").
// After the handshake the session reports the verified peer as a
// PeerIdentity built from those two fields.
//
// Failures: a handshake that fails leaves the session failed() with a Status
// whose message is one line a user understands ("certificate not signed by
// the cluster CA", "certificate expired", "no client certificate", "plaintext
// sent to a TLS port", "server name mismatch", ...). PermissionDenied for a
// peer that is not who it must be (certificate refused, by us or by the
// peer), Unavailable for a peer that does not speak TLS or goes away.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/identity.h"
#include "common/status.h"

// OpenSSL's types, declared here so that users of this header do not include
// OpenSSL's.
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;
typedef struct x509_store_ctx_st X509_STORE_CTX;

namespace dtx {

// How long a connection may stay in the TLS handshake before it is closed
// (servers and PeerChannel): a silent or very slow peer does not hold a
// connection slot forever.
inline constexpr int kTlsHandshakeTimeoutMs = 10000;

// PEM files. ca_file: the cluster CA certificate. cert_file, key_file: our
// certificate (optionally followed by intermediates) and its private key.
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

enum class TlsSide { kServer, kClient };

struct TlsContextOptions {
  // Server side: refuse a client that presents no certificate. Every peer and
  // admin listener requires one; off only for a listener that admits clients
  // without a certificate (they are then PrincipalKind::kNone).
  bool require_client_cert = true;
};

// One side's TLS configuration: an SSL_CTX restricted to TLS 1.3, trusting the
// cluster CA only, holding our certificate and key. Immutable after Create();
// thread-safe; shared by every session made from it (shared_ptr).
class TlsContext {
 public:
  // Loads and checks the files. InvalidArgument for a missing or unreadable
  // file (naming it and the OS error), a file that holds no PEM certificate
  // or key, or a key that does not match the certificate. A server needs
  // cert_file and key_file; a client may leave both empty (it then has no
  // certificate to present). A certificate that does not verify against the
  // CA (expired, another CA's) is accepted with a logged warning: the peer
  // refuses it at the handshake and says why (and tests need such contexts).
  static Result<std::shared_ptr<const TlsContext>> Create(const TlsFiles& files, TlsSide side,
                                                          TlsContextOptions options = {});
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsSide side() const { return side_; }
  const TlsContextOptions& options() const { return options_; }
  // Our own identity as our certificate states it (kind kNone and name ""
  // for a client without a certificate).
  const PeerIdentity& local_identity() const { return local_; }

 private:
  friend class TlsSession;  // makes its SSL from ctx_
  TlsContext(SSL_CTX* ctx, TlsSide side, TlsContextOptions options)
      : ctx_(ctx), side_(side), options_(options) {}
  SSL_CTX* ctx_;
  TlsSide side_;
  TlsContextOptions options_;
  PeerIdentity local_;
};

// Whom a client expects at the other end: a name ("participant-2"), a kind
// (any coordinator), both, or neither (any principal of the cluster CA).
// Checked after the handshake against the server certificate's CN and OU.
struct TlsExpectedPeer {
  PrincipalKind kind = PrincipalKind::kNone;  // kNone: any kind
  std::string name;                           // "": any name
  bool Matches(const PeerIdentity& id) const {
    return (kind == PrincipalKind::kNone || id.kind == kind) && (name.empty() || id.name == name);
  }
  // "participant-2 (participant)", "any coordinator", "any cluster principal".
  std::string Describe() const;
};

// The TLS engine of one connection, over memory BIOs:
//
//   socket bytes --Receive()--> [handshake | decrypt] --> plaintext out-param
//   plaintext    --Send()-----> [encrypt] ------------> TakeOutput() --> socket
//
// After every Receive() and Send() the caller takes the output (handshake
// messages, records, alerts) and writes it to the socket in order. A client
// session calls Start() once to produce its ClientHello.
//
// Limits: Receive() decrypts everything it was given (the caller bounds how
// much it reads, as it does for plaintext); Send() buffers the records until
// TakeOutput().
//
// Ownership: holds a reference to its TlsContext. Not thread-safe: one
// connection, one thread (the loop thread).
class TlsSession {
 public:
  // `expected` applies to a client session only (a server identifies its
  // clients, it does not expect one in particular).
  static std::unique_ptr<TlsSession> Create(std::shared_ptr<const TlsContext> context,
                                            TlsExpectedPeer expected = {});
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Client side: begins the handshake (the ClientHello is then in the
  // output). Once only.
  Status Start();

  // Feeds `len` bytes read from the socket; drives the handshake; appends the
  // application bytes they decrypt to *plaintext. Non-OK once the session
  // has failed (the same Status as failure(); there may be an alert to send
  // in the output). A peer's close_notify sets peer_closed().
  Status Receive(const uint8_t* data, size_t len, std::vector<uint8_t>* plaintext);

  // The socket reached EOF. During the handshake this fails the session
  // ("connection closed during the TLS handshake") and returns that status;
  // after it, OK (the transport treats EOF as it does without TLS).
  Status ReceiveEof();

  // Encrypts application bytes. Only after handshake_done(); non-OK if the
  // session failed.
  Status Send(const uint8_t* data, size_t len);

  // Appends the bytes to write to the socket to *out; returns how many.
  size_t TakeOutput(std::string* out);
  bool has_output() const;
  // Received ciphertext not yet made into plaintext (a partial record).
  bool has_pending_input() const;

  bool handshake_done() const { return state_ == State::kEstablished; }
  bool failed() const { return state_ == State::kFailed; }
  bool peer_closed() const { return peer_closed_; }
  // True once Receive() was given any byte.
  bool received_any() const { return received_any_; }
  // The reason the session failed (OK while it has not).
  const Status& failure() const { return failure_; }
  // The verified peer (after handshake_done()); address is left empty for
  // the transport to fill. Kind kNone for a client without a certificate on
  // a server that does not require one.
  const PeerIdentity& peer() const { return peer_; }

 private:
  enum class State { kNew, kHandshaking, kEstablished, kFailed };
  explicit TlsSession(std::shared_ptr<const TlsContext> context, TlsExpectedPeer expected);
  Status DriveHandshake();
  Status ReadPlaintext(std::vector<uint8_t>* plaintext);
  Status Fail(Status why);
  Status FailFromOpenSsl(int ret, const char* during);
  Status CheckPeer();

  // Records the first certificate verification failure in verify_failure_.
  static int VerifyCallback(int preverify_ok, X509_STORE_CTX* store);

  std::shared_ptr<const TlsContext> context_;
  TlsExpectedPeer expected_;
  SSL* ssl_ = nullptr;
  BIO* in_bio_ = nullptr;   // ciphertext from the socket; owned by ssl_
  BIO* out_bio_ = nullptr;  // ciphertext for the socket; owned by ssl_
  State state_ = State::kNew;
  bool received_any_ = false;
  bool peer_closed_ = false;
  Status failure_;
  // The first certificate verification failure, as a user-facing line (set
  // by the verify callback, used when the handshake then fails).
  std::string verify_failure_;
  PeerIdentity peer_;
};

}  // namespace dtx
