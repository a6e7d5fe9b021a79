/* Connection set-up, timing, percentiles and the queue helpers the harness uses. */

#include "internal.h"

#include <errno.h>
#include <sys/resource.h>
#include <time.h>

/* --- Timing ------------------------------------------------------------------------ */

uint64_t crmq_bench_monotonic_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static uint64_t timeval_ns(struct timeval tv) {
  return (uint64_t)tv.tv_sec * 1000000000u + (uint64_t)tv.tv_usec * 1000u;
}

void crmq_bench_sample_now(crmq_bench_sample *out) {
  struct rusage usage;
  memset(&usage, 0, sizeof(usage));
  getrusage(RUSAGE_SELF, &usage);
  out->wall_ns = crmq_bench_monotonic_ns();
  out->user_ns = timeval_ns(usage.ru_utime);
  out->system_ns = timeval_ns(usage.ru_stime);
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

uint64_t crmq_bench_percentile(uint64_t *values, size_t count, double fraction) {
  if (count == 0) return 0;
  qsort(values, count, sizeof(uint64_t), compare_u64);
  if (fraction <= 0) return values[0];
  if (fraction >= 1) return values[count - 1];
  /* Nearest rank: the smallest value with at least fraction of the values at or below it. */
  size_t rank = (size_t)(fraction * (double)count + 0.999999999);
  if (rank < 1) rank = 1;
  if (rank > count) rank = count;
  return values[rank - 1];
}

uint64_t bench_deadline(double max_seconds) {
  if (max_seconds <= 0) max_seconds = 60;
  return crmq_bench_monotonic_ns() + (uint64_t)(max_seconds * 1e9);
}

uint8_t *bench_make_body(size_t body_size) {
  uint8_t *body = malloc(body_size > 0 ? body_size : 1);
  if (body == NULL) return NULL;
  for (size_t i = 0; i < body_size; i++) body[i] = (uint8_t)('a' + i % 26);
  return body;
}

void bench_make_headers(amqp_table_entry_t entries[BENCH_HEADER_COUNT], amqp_table_t *table) {
  entries[0].key = amqp_cstring_bytes("trace-id");
  entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[0].value.value.bytes = amqp_cstring_bytes("4bf92f3577b34da6a3ce929d0e0e4736");
  entries[1].key = amqp_cstring_bytes("attempt");
  entries[1].value.kind = AMQP_FIELD_KIND_I64;
  entries[1].value.value.i64 = 1;
  entries[2].key = amqp_cstring_bytes("origin");
  entries[2].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[2].value.value.bytes = amqp_cstring_bytes("rabbitmq-bench");
  entries[3].key = amqp_cstring_bytes("sampled");
  entries[3].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  entries[3].value.value.boolean = 1;
  entries[4].key = amqp_cstring_bytes("created");
  entries[4].value.kind = AMQP_FIELD_KIND_TIMESTAMP;
  entries[4].value.value.u64 = 1700000000;
  entries[5].key = amqp_cstring_bytes("weight");
  entries[5].value.kind = AMQP_FIELD_KIND_F64;
  entries[5].value.value.f64 = 0.5;
  table->num_entries = BENCH_HEADER_COUNT;
  table->entries = entries;
}

/* --- Errors ------------------------------------------------------------------------ */

int bench_fail(char *error, size_t error_size, int status, const char *format, ...) {
  if (error != NULL && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return status != 0 ? status : -1;
}

int bench_reply_error(amqp_rpc_reply_t reply, const char *what, char *error, size_t error_size) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return 0;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return bench_fail(error, error_size, reply.library_error, "%s: %s", what,
                        amqp_error_string2(reply.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD || reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        /* channel.close and connection.close share their first fields' layout. */
        const amqp_channel_close_t *close = reply.reply.decoded;
        return bench_fail(error, error_size, -(int)close->reply_code, "%s: broker closed with %u %.*s", what,
                          close->reply_code, (int)close->reply_text.len, (const char *)close->reply_text.bytes);
      }
      return bench_fail(error, error_size, -1, "%s: unexpected server method 0x%08x", what, reply.reply.id);
    default:
      return bench_fail(error, error_size, -1, "%s: no reply", what);
  }
}

int bench_check_close(const amqp_frame_t *frame, char *error, size_t error_size) {
  if (frame->frame_type != AMQP_FRAME_METHOD) return 0;
  switch (frame->payload.method.id) {
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
      const amqp_channel_close_t *close = frame->payload.method.decoded;
      return bench_fail(error, error_size, -(int)close->reply_code, "broker closed channel %u: %u %.*s",
                        frame->channel, close->reply_code, (int)close->reply_text.len,
                        (const char *)close->reply_text.bytes);
    }
    case AMQP_BASIC_CANCEL_METHOD:
      return bench_fail(error, error_size, -1, "broker cancelled the consumer");
    default:
      return 0;
  }
}

/* --- Connections --------------------------------------------------------------------- */

int bench_connect(const crmq_bench_endpoint *endpoint, bench_conn *conn, char *error, size_t error_size) {
  conn->state = amqp_new_connection();
  if (conn->state == NULL) return bench_fail(error, error_size, -1, "amqp_new_connection failed");
  amqp_socket_t *socket = endpoint->tls ? amqp_ssl_socket_new(conn->state) : amqp_tcp_socket_new(conn->state);
  if (socket == NULL) {
    bench_disconnect(conn);
    return bench_fail(error, error_size, -1, "creating the socket failed");
  }
  if (endpoint->tls) {
    /* The chain is verified as the Swift side does; the name is not (rabbitmq-c 0.11 checks
     * DNS names only, and the test broker is reached at 127.0.0.1). Connect-time only. */
    amqp_ssl_socket_set_verify_peer(socket, endpoint->cacert != NULL);
    amqp_ssl_socket_set_verify_hostname(socket, 0);
    if (endpoint->cacert != NULL && amqp_ssl_socket_set_cacert(socket, endpoint->cacert) != AMQP_STATUS_OK) {
      bench_disconnect(conn);
      return bench_fail(error, error_size, -1, "could not load the CA file %s", endpoint->cacert);
    }
  }
  struct timeval connect_timeout = {10, 0};
  int status = amqp_socket_open_noblock(socket, endpoint->host, endpoint->port, &connect_timeout);
  if (status != AMQP_STATUS_OK) {
    bench_disconnect(conn);
    return bench_fail(error, error_size, status, "connecting to %s:%d: %s", endpoint->host, endpoint->port,
                      amqp_error_string2(status));
  }
  struct timeval handshake_timeout = {10, 0};
  amqp_set_handshake_timeout(conn->state, &handshake_timeout);
  int channel_max = endpoint->channel_max > 0 ? endpoint->channel_max : 256;
  int frame_max = endpoint->frame_max > 0 ? endpoint->frame_max : 131072;
  amqp_rpc_reply_t reply = amqp_login(conn->state, endpoint->vhost, channel_max, frame_max, endpoint->heartbeat,
                                      AMQP_SASL_METHOD_PLAIN, endpoint->user, endpoint->password);
  if ((status = bench_reply_error(reply, "login", error, error_size)) != 0) {
    bench_disconnect(conn);
    return status;
  }
  /* Bounds the blocking helpers used around the measured loops. */
  struct timeval rpc_timeout = {30, 0};
  amqp_set_rpc_timeout(conn->state, &rpc_timeout);
  amqp_channel_open(conn->state, BENCH_CHANNEL);
  if ((status = bench_reply_error(amqp_get_rpc_reply(conn->state), "channel.open", error, error_size)) != 0) {
    bench_disconnect(conn);
    return status;
  }
  return 0;
}

void bench_disconnect(bench_conn *conn) {
  if (conn->state == NULL) return;
  /* amqp_destroy_connection does not send connection.close; do it, best effort. */
  amqp_connection_close(conn->state, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn->state);
  conn->state = NULL;
}

int bench_wait_frame(bench_conn *conn, amqp_frame_t *frame, uint64_t deadline_ns) {
  struct timeval timeout = {0, 0};
  if (deadline_ns != 0) {
    uint64_t now = crmq_bench_monotonic_ns();
    uint64_t left = deadline_ns > now ? deadline_ns - now : 0;
    timeout.tv_sec = (time_t)(left / 1000000000u);
    timeout.tv_usec = (suseconds_t)((left % 1000000000u) / 1000u);
  }
  return amqp_simple_wait_frame_noblock(conn->state, frame, &timeout);
}

/* --- Queue helpers ------------------------------------------------------------------- */

int crmq_bench_queue_reset(const crmq_bench_endpoint *endpoint, const char *queue, int64_t max_length,
                           char *error, size_t error_size) {
  bench_conn conn;
  int status = bench_connect(endpoint, &conn, error, error_size);
  if (status != 0) return status;
  amqp_table_entry_t entries[1];
  amqp_table_t arguments = amqp_empty_table;
  if (max_length > 0) {
    entries[0].key = amqp_cstring_bytes("x-max-length");
    entries[0].value.kind = AMQP_FIELD_KIND_I64;
    entries[0].value.value.i64 = max_length;
    arguments.num_entries = 1;
    arguments.entries = entries;
  }
  amqp_queue_declare(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(queue), 0, 0, 0, 0, arguments);
  status = bench_reply_error(amqp_get_rpc_reply(conn.state), "queue.declare", error, error_size);
  if (status == 0) {
    amqp_queue_purge(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(queue));
    status = bench_reply_error(amqp_get_rpc_reply(conn.state), "queue.purge", error, error_size);
  }
  bench_disconnect(&conn);
  return status;
}

int crmq_bench_queue_delete(const crmq_bench_endpoint *endpoint, const char *queue, char *error,
                            size_t error_size) {
  bench_conn conn;
  int status = bench_connect(endpoint, &conn, error, error_size);
  if (status != 0) return status;
  amqp_queue_delete(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(queue), 0, 0);
  status = bench_reply_error(amqp_get_rpc_reply(conn.state), "queue.delete", error, error_size);
  bench_disconnect(&conn);
  return status;
}

int crmq_bench_queue_counts(const crmq_bench_endpoint *endpoint, const char *queue, uint32_t *messages,
                            uint32_t *consumers, char *error, size_t error_size) {
  bench_conn conn;
  int status = bench_connect(endpoint, &conn, error, error_size);
  if (status != 0) return status;
  amqp_queue_declare_ok_t *ok =
      amqp_queue_declare(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
  status = bench_reply_error(amqp_get_rpc_reply(conn.state), "queue.declare (passive)", error, error_size);
  if (status == 0 && ok != NULL) {
    if (messages != NULL) *messages = ok->message_count;
    if (consumers != NULL) *consumers = ok->consumer_count;
  }
  bench_disconnect(&conn);
  return status;
}

int crmq_bench_fill(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size, uint64_t count,
                    char *error, size_t error_size) {
  bench_conn conn;
  int status = bench_connect(endpoint, &conn, error, error_size);
  if (status != 0) return status;
  crmq_bench_result ignored;
  memset(&ignored, 0, sizeof(ignored));
  uint32_t queued = 0;
  status = bench_publish_loop(&conn, queue, body_size, count, 0, bench_deadline(120), &ignored, &queued, error,
                              error_size);
  bench_disconnect(&conn);
  return status;
}
