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
