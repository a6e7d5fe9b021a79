#ifndef CRABBITMQ_SHIM_H
#define CRABBITMQ_SHIM_H

/* rabbitmq-c moved its headers under rabbitmq-c/ and dropped the amqp_ prefix in 0.12;
 * Debian 12 ships 0.11 with the old top-level names. */
#if __has_include(<rabbitmq-c/amqp.h>)
#  include <rabbitmq-c/amqp.h>
#  include <rabbitmq-c/framing.h>
#  include <rabbitmq-c/tcp_socket.h>
#  include <rabbitmq-c/ssl_socket.h>
#else
#  include <amqp.h>
#  include <amqp_framing.h>
#  include <amqp_tcp_socket.h>
#  include <amqp_ssl_socket.h>
#endif

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>
#ifdef __linux__
#  include <sys/eventfd.h> /* not exported by Swift's Glibc module */
#  include <sys/prctl.h>
#endif

/* amqp_login_with_properties is C-variadic (the SASL arguments), which Swift cannot call. */
static inline amqp_rpc_reply_t crmq_login_plain(amqp_connection_state_t state,
                                                const char *vhost, int channel_max,
                                                int frame_max, int heartbeat,
                                                const amqp_table_t *properties,
                                                const char *user, const char *password) {
  return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat,
                                    properties, AMQP_SASL_METHOD_PLAIN, user, password);
}

static inline amqp_rpc_reply_t crmq_login_external(amqp_connection_state_t state,
                                                   const char *vhost, int channel_max,
                                                   int frame_max, int heartbeat,
                                                   const amqp_table_t *properties,
                                                   const char *identity) {
  return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat,
                                    properties, AMQP_SASL_METHOD_EXTERNAL, identity);
}

/* TLS: what rabbitmq-c's OpenSSL socket does not do by itself, done through the SSL_CTX it
 * owns (amqp_ssl_socket_get_context; one context per socket in every version since 0.9):
 *  - the host name or IP address check, by OpenSSL during chain verification
 *    (X509_VERIFY_PARAM), which also knows IP addresses in the subjectAltName; rabbitmq-c's
 *    own check (DNS names only before 0.12) is switched off by the caller;
 *  - the first verification error, for an error message that names it;
 *  - the connection's SSL object (rabbitmq-c never exposes it), seen by the info callback
 *    when the handshake starts, so that the frame writer can SSL_write its batches itself;
 *  - SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: a write retried after WANT_WRITE may come from a
 *    buffer that has moved (the writer compacts and grows its buffer).
 * The state is owned by the caller, outlives the socket's use, and is reached through the
 * context's app data (rabbitmq-c sets none). One I/O thread uses it. */
typedef struct {
  SSL *ssl;
  long first_error;     /* X509_V_OK (0) when verification found nothing */
  int name_mismatch;    /* the host name or IP address check failed */
} crmq_tls_state;

static inline int crmq_tls_verify_callback(int preverify_ok, X509_STORE_CTX *store) {
  if (!preverify_ok) {
    SSL *ssl = (SSL *)X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    crmq_tls_state *state = ssl ? (crmq_tls_state *)SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (state) {
      long error = X509_STORE_CTX_get_error(store);
      if (state->first_error == X509_V_OK) state->first_error = error;
      if (error == X509_V_ERR_HOSTNAME_MISMATCH || error == X509_V_ERR_IP_ADDRESS_MISMATCH)
        state->name_mismatch = 1;
    }
  }
  /* Never abort the handshake here: rabbitmq-c reads the verification result afterwards
   * (verify_peer), and the caller reads `state` (a name check without peer verification). */
  return 1;
}

static inline void crmq_tls_info_callback(const SSL *ssl, int where, int ret) {
  (void)ret;
  if (where & SSL_CB_HANDSHAKE_START) {
    crmq_tls_state *state = (crmq_tls_state *)SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (state) state->ssl = (SSL *)ssl;
  }
}

/* Prepares a socket's context before amqp_socket_open; `expected_name` (NULL: no name check)
 * is a DNS name or an IP address literal. Returns 0 on success. */
static inline int crmq_tls_prepare(amqp_socket_t *socket, crmq_tls_state *state, const char *expected_name) {
  SSL_CTX *ctx = (SSL_CTX *)amqp_ssl_socket_get_context(socket);
  if (!ctx) return -1;
  state->ssl = NULL;
  state->first_error = X509_V_OK;
  state->name_mismatch = 0;
  SSL_CTX_set_app_data(ctx, state);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, crmq_tls_verify_callback);
  SSL_CTX_set_info_callback(ctx, crmq_tls_info_callback);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (expected_name) {
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    unsigned char address[16];
    if (inet_pton(AF_INET, expected_name, address) == 1 || inet_pton(AF_INET6, expected_name, address) == 1) {
      if (X509_VERIFY_PARAM_set1_ip_asc(param, expected_name) != 1) return -1;
    } else {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (X509_VERIFY_PARAM_set1_host(param, expected_name, 0) != 1) return -1;
    }
  }
  return 0;
}

/* OpenSSL's text for a verification error (a static string). */
static inline const char *crmq_tls_verify_error_string(long error) {
  return X509_verify_cert_error_string(error);
}

/* Outcome of crmq_tls_write: bytes written (> 0), or one of these. */
enum { CRMQ_TLS_WANT_WRITE = -1, CRMQ_TLS_WANT_READ = -2, CRMQ_TLS_CLOSED = -3, CRMQ_TLS_FAILED = -4 };

/* SSL_write of one stretch on the non-blocking socket (partial writes on, as rabbitmq-c sets);
 * after a WANT_* it must be called again with at least the same bytes. */
static inline long crmq_tls_write(SSL *ssl, const void *bytes, size_t length) {
  int chunk = length > INT32_MAX ? INT32_MAX : (int)length;
  ERR_clear_error();
  int written = SSL_write(ssl, bytes, chunk);
  if (written > 0) return written;
  switch (SSL_get_error(ssl, written)) {
    case SSL_ERROR_WANT_WRITE: return CRMQ_TLS_WANT_WRITE;
    case SSL_ERROR_WANT_READ: return CRMQ_TLS_WANT_READ;
    case SSL_ERROR_ZERO_RETURN: return CRMQ_TLS_CLOSED;
    default: return CRMQ_TLS_FAILED;
  }
}

/* Milliseconds since the socket last received data, from the kernel; -1 when unknown.
 * Used by the watchdog to tell a dead peer from a slow one. */
static inline long crmq_tcp_last_data_recv_ms(int fd) {
#ifdef TCP_INFO
  struct tcp_info info;
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  return (long)info.tcpi_last_data_recv;
#else
  (void)fd;
  return -1;
#endif
}

static inline int crmq_eventfd(void) {
#ifdef __linux__
  return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
#else
  return -1;
#endif
}

/* Names the calling thread (visible in top, gdb and /proc). */
static inline void crmq_set_thread_name(const char *name) {
#ifdef __linux__
  prctl(PR_SET_NAME, name, 0, 0, 0);
#else
  (void)name;
#endif
}

#endif /* CRABBITMQ_SHIM_H */
