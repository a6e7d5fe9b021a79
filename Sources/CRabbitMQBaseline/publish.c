/* Publishing scenarios: fire-and-forget, and publisher confirms streamed or awaited one by
 * one. rabbitmq-c 0.11 has no amqp_publisher_confirm_wait (added in 0.15), so confirms are
 * read as basic.ack / basic.nack method frames with amqp_simple_wait_frame_noblock. */

#include "internal.h"

/* Checked only every this many messages: reading the clock per message would cost more
 * than the thing measured. */
#define DEADLINE_CHECK_MASK 1023u

/* Publishes between two non-blocking reads of confirms, as the Swift I/O loop does. */
#define CONFIRM_BURST 128u

static amqp_basic_properties_t transient_properties(void) {
  amqp_basic_properties_t properties;
  memset(&properties, 0, sizeof(properties));
  properties._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  properties.delivery_mode = 1; /* transient */
  return properties;
}

int bench_publish_loop(bench_conn *conn, const char *queue, size_t body_size, uint64_t count, int with_headers,
                       uint64_t deadline_ns, crmq_bench_result *measure, uint32_t *queued, char *error,
                       size_t error_size) {
  uint8_t *buffer = bench_make_body(body_size);
  if (buffer == NULL) return bench_fail(error, error_size, -1, "out of memory");
  amqp_bytes_t body = {body_size, buffer};
  amqp_bytes_t routing_key = amqp_cstring_bytes(queue);
  amqp_basic_properties_t properties = transient_properties();
  amqp_table_entry_t entries[BENCH_HEADER_COUNT];
  if (with_headers) {
    bench_make_headers(entries, &properties.headers);
    properties._flags |= AMQP_BASIC_HEADERS_FLAG;
  }
  int status = 0;
  crmq_bench_sample_now(&measure->start);
  uint64_t sent = 0;
  for (; sent < count; sent++) {
    status = amqp_basic_publish(conn->state, BENCH_CHANNEL, amqp_empty_bytes, routing_key, 0, 0, &properties, body);
    if (status != AMQP_STATUS_OK) {
      status = bench_fail(error, error_size, status, "amqp_basic_publish: %s", amqp_error_string2(status));
      break;
    }
    if ((sent & DEADLINE_CHECK_MASK) == DEADLINE_CHECK_MASK && crmq_bench_monotonic_ns() > deadline_ns) {
      status = bench_fail(error, error_size, AMQP_STATUS_TIMEOUT, "timed out after %llu publishes",
                          (unsigned long long)sent);
      break;
    }
  }
  if (status == 0) {
    /* The broker handles a channel's methods in order: the declare-ok proves it has
     * processed (routed) every publish before it. */
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(conn->state, BENCH_CHANNEL, routing_key, 1, 0, 0, 0, amqp_empty_table);
    status = bench_reply_error(amqp_get_rpc_reply(conn->state), "queue.declare (passive)", error, error_size);
    if (status == 0 && ok != NULL) *queued = ok->message_count;
  }
  crmq_bench_sample_now(&measure->end);
  measure->messages = sent;
  free(buffer);
  return status;
}

void crmq_bench_publish(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size, uint64_t count,
                        int with_headers, double max_seconds, crmq_bench_result *result) {
  memset(result, 0, sizeof(*result));
  bench_conn conn;
  result->status = bench_connect(endpoint, &conn, result->error, sizeof(result->error));
  if (result->status != 0) return;
  uint32_t queued = 0;
  result->status = bench_publish_loop(&conn, queue, body_size, count, with_headers, bench_deadline(max_seconds),
                                      result, &queued, result->error, sizeof(result->error));
  result->check = queued;
  bench_disconnect(&conn);
}

/* --- Confirms ------------------------------------------------------------------------ */

/* The confirm window: sequence numbers [oldest, next) are published and unconfirmed;
 * done[seq % capacity] marks those already confirmed out of order. */
typedef struct confirm_window {
  uint8_t *done;
  uint32_t capacity;
  uint64_t next;   /* sequence number of the next publish (the broker starts at 1) */
  uint64_t oldest; /* oldest unconfirmed */
  uint64_t nacks;
} confirm_window;

static void window_settle(confirm_window *window, uint64_t tag, int multiple, int nack) {
  if (tag < window->oldest || tag >= window->next) return; /* stale or bogus: ignore */
  uint64_t first = multiple ? window->oldest : tag;
  for (uint64_t seq = first; seq <= tag; seq++) {
    uint8_t *slot = &window->done[seq % window->capacity];
    if (!*slot && nack) window->nacks++;
    *slot = 1;
  }
  while (window->oldest < window->next && window->done[window->oldest % window->capacity]) {
    window->done[window->oldest % window->capacity] = 0;
    window->oldest++;
  }
}

/* Handles one frame while confirms are expected; returns 0 or a failure status. */
static int window_frame(confirm_window *window, const amqp_frame_t *frame, char *error, size_t error_size) {
  if (frame->frame_type != AMQP_FRAME_METHOD) return 0;
  int status = bench_check_close(frame, error, error_size);
  if (status != 0) return status;
  if (frame->channel != BENCH_CHANNEL) return 0;
  if (frame->payload.method.id == AMQP_BASIC_ACK_METHOD) {
    const amqp_basic_ack_t *ack = frame->payload.method.decoded;
    window_settle(window, ack->delivery_tag, ack->multiple, 0);
  } else if (frame->payload.method.id == AMQP_BASIC_NACK_METHOD) {
    const amqp_basic_nack_t *nack = frame->payload.method.decoded;
    window_settle(window, nack->delivery_tag, nack->multiple, 1);
  }
  return 0;
}

/* Reads confirms: blocks (until deadline) for the first frame when block is set, then
 * takes whatever else is already readable without blocking. */
static int window_read(bench_conn *conn, confirm_window *window, int block, uint64_t deadline_ns, char *error,
                       size_t error_size) {
  for (int frames = 0; frames < 4096; frames++) {
    amqp_frame_t frame;
    int status = bench_wait_frame(conn, &frame, block ? deadline_ns : 0);
    if (status == AMQP_STATUS_TIMEOUT) {
      if (block) return bench_fail(error, error_size, status, "timed out waiting for confirms");
      return 0;
    }
    if (status != AMQP_STATUS_OK)
      return bench_fail(error, error_size, status, "reading confirms: %s", amqp_error_string2(status));
    status = window_frame(window, &frame, error, error_size);
    amqp_maybe_release_buffers_on_channel(conn->state, frame.channel);
    if (status != 0) return status;
    block = 0;
  }
  return 0;
}

/* Connects and puts the channel in confirm mode; on failure nothing is left open. */
static int connect_confirming(const crmq_bench_endpoint *endpoint, bench_conn *conn, crmq_bench_result *result) {
  if ((result->status = bench_connect(endpoint, conn, result->error, sizeof(result->error))) != 0) return result->status;
  amqp_confirm_select(conn->state, BENCH_CHANNEL);
  result->status = bench_reply_error(amqp_get_rpc_reply(conn->state), "confirm.select", result->error, sizeof(result->error));
  if (result->status != 0) bench_disconnect(conn);
  return result->status;
}

void crmq_bench_publish_confirm_stream(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size,
                                       uint64_t count, uint32_t window_size, double max_seconds,
                                       crmq_bench_result *result) {
  memset(result, 0, sizeof(*result));
  if (window_size == 0) window_size = 1;
  bench_conn conn;
  if (connect_confirming(endpoint, &conn, result) != 0) return;
  uint8_t *buffer = bench_make_body(body_size);
  confirm_window window = {calloc(window_size, 1), window_size, 1, 1, 0};
  if (buffer == NULL || window.done == NULL) {
    BENCH_RESULT_FAIL(result, -1, "out of memory");
    goto done;
  }
  amqp_bytes_t body = {body_size, buffer};
  amqp_bytes_t routing_key = amqp_cstring_bytes(queue);
  amqp_basic_properties_t properties = transient_properties();
  uint64_t deadline = bench_deadline(max_seconds);
  int status = 0;

  crmq_bench_sample_now(&result->start);
  /* Bounded: each turn publishes or confirms at least one message, or fails on the deadline. */
  while (window.oldest <= count) {
    uint32_t burst = 0;
    while (window.next <= count && window.next - window.oldest < window_size && burst < CONFIRM_BURST) {
      status = amqp_basic_publish(conn.state, BENCH_CHANNEL, amqp_empty_bytes, routing_key, 0, 0, &properties, body);
      if (status != AMQP_STATUS_OK) {
        BENCH_RESULT_FAIL(result, status, "amqp_basic_publish: %s", amqp_error_string2(status));
        goto measured;
      }
      window.next++;
      burst++;
    }
    /* Block only when nothing more may be sent: the window is full or everything is out. */
    int block = window.next > count || window.next - window.oldest >= window_size;
    status = window_read(&conn, &window, block, deadline, result->error, sizeof(result->error));
    if (status != 0) {
      result->status = status;
      goto measured;
    }
    if (crmq_bench_monotonic_ns() > deadline) {
      BENCH_RESULT_FAIL(result, AMQP_STATUS_TIMEOUT, "timed out with %llu confirmed",
                        (unsigned long long)(window.oldest - 1));
      goto measured;
    }
  }
measured:
  crmq_bench_sample_now(&result->end);
  result->messages = window.oldest - 1;
  result->check = window.nacks;
done:
  free(window.done);
  free(buffer);
  bench_disconnect(&conn);
}

void crmq_bench_publish_confirm_each(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size,
                                     uint64_t count, double max_seconds, crmq_bench_result *result) {
  memset(result, 0, sizeof(*result));
  bench_conn conn;
  if (connect_confirming(endpoint, &conn, result) != 0) return;
  uint8_t *buffer = bench_make_body(body_size);
  uint64_t *latencies = malloc((count > 0 ? count : 1) * sizeof(uint64_t));
  confirm_window window = {calloc(1, 1), 1, 1, 1, 0};
  if (buffer == NULL || latencies == NULL || window.done == NULL) {
    BENCH_RESULT_FAIL(result, -1, "out of memory");
    goto done;
  }
  amqp_bytes_t body = {body_size, buffer};
  amqp_bytes_t routing_key = amqp_cstring_bytes(queue);
  amqp_basic_properties_t properties = transient_properties();
  uint64_t deadline = bench_deadline(max_seconds);

  crmq_bench_sample_now(&result->start);
  uint64_t done_count = 0;
  for (; done_count < count; done_count++) {
    uint64_t started = crmq_bench_monotonic_ns();
    int status = amqp_basic_publish(conn.state, BENCH_CHANNEL, amqp_empty_bytes, routing_key, 0, 0, &properties, body);
    if (status != AMQP_STATUS_OK) {
      BENCH_RESULT_FAIL(result, status, "amqp_basic_publish: %s", amqp_error_string2(status));
      break;
    }
    window.next++;
    /* Bounded by the deadline: window_read fails when it passes. */
    while (window.oldest < window.next && status == 0) {
      status = window_read(&conn, &window, 1, deadline, result->error, sizeof(result->error));
    }
    if (status != 0) {
      result->status = status;
      break;
    }
    latencies[done_count] = crmq_bench_monotonic_ns() - started;
  }
  crmq_bench_sample_now(&result->end);
  result->messages = done_count;
  result->check = window.nacks;
  result->p50_ns = crmq_bench_percentile(latencies, done_count, 0.50);
  result->p99_ns = crmq_bench_percentile(latencies, done_count, 0.99);
done:
  free(window.done);
  free(latencies);
  free(buffer);
  bench_disconnect(&conn);
}
