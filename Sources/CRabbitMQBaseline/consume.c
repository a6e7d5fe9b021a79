/* Consuming with manual acknowledgements, reading frames directly.
 *
 * amqp_consume_message would be simpler but costs three mallocs for the envelope's strings
 * plus one for the body per message; a careful C consumer assembles deliveries from frames
 * and copies each body once into a reused buffer, as here. */

#include "internal.h"

/* A delivery being assembled from its method, header and body frames. */
typedef struct assembly {
  uint8_t *buffer;
  size_t capacity;
  uint64_t delivery_tag;
  int64_t body_size; /* -1 until the header frame */
  size_t received;
  int active;
} assembly;

/* Takes one frame; returns 1 when it completed a delivery, 0 when not, negative on error. */
static int assemble(assembly *a, const amqp_frame_t *frame, char *error, size_t error_size) {
  if (frame->channel != BENCH_CHANNEL) return 0;
  switch (frame->frame_type) {
    case AMQP_FRAME_METHOD: {
      int status = bench_check_close(frame, error, error_size);
      if (status != 0) return status;
      if (frame->payload.method.id != AMQP_BASIC_DELIVER_METHOD) return 0;
      const amqp_basic_deliver_t *deliver = frame->payload.method.decoded;
      a->delivery_tag = deliver->delivery_tag;
      a->body_size = -1;
      a->received = 0;
      a->active = 1;
      return 0;
    }
    case AMQP_FRAME_HEADER:
      if (!a->active) return bench_fail(error, error_size, -1, "content header without a delivery");
      a->body_size = (int64_t)frame->payload.properties.body_size;
      if ((size_t)a->body_size > a->capacity) {
        /* Grows once to the largest body seen; steady state allocates nothing. */
        uint8_t *bigger = realloc(a->buffer, (size_t)a->body_size);
        if (bigger == NULL) return bench_fail(error, error_size, -1, "out of memory");
        a->buffer = bigger;
        a->capacity = (size_t)a->body_size;
      }
      if (a->body_size == 0) {
        a->active = 0;
        return 1;
      }
      return 0;
    case AMQP_FRAME_BODY: {
      if (!a->active || a->body_size < 0) return bench_fail(error, error_size, -1, "content body without a header");
      amqp_bytes_t fragment = frame->payload.body_fragment;
      if (a->received + fragment.len > (size_t)a->body_size)
        return bench_fail(error, error_size, -1, "content body longer than announced");
      memcpy(a->buffer + a->received, fragment.bytes, fragment.len);
      a->received += fragment.len;
      if (a->received == (size_t)a->body_size) {
        a->active = 0;
        return 1;
      }
      return 0;
    }
    default:
      return 0;
  }
}

void crmq_bench_consume(const crmq_bench_endpoint *endpoint, const char *queue, uint64_t count,
                        uint16_t prefetch, uint32_t ack_every, double max_seconds, crmq_bench_result *result) {
  memset(result, 0, sizeof(*result));
  if (ack_every == 0) ack_every = 1;
  bench_conn conn;
  if ((result->status = bench_connect(endpoint, &conn, result->error, sizeof(result->error))) != 0) return;
  char *error = result->error;
  size_t error_size = sizeof(result->error);
  assembly a = {malloc(4096), 4096, 0, -1, 0, 0};
  if (a.buffer == NULL) {
    BENCH_RESULT_FAIL(result, -1, "out of memory");
    goto done;
  }
  amqp_basic_qos(conn.state, BENCH_CHANNEL, 0, prefetch, 0);
  if ((result->status = bench_reply_error(amqp_get_rpc_reply(conn.state), "basic.qos", error, error_size)) != 0)
    goto done;
  amqp_basic_consume(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  if ((result->status = bench_reply_error(amqp_get_rpc_reply(conn.state), "basic.consume", error, error_size)) != 0)
    goto done;

  uint64_t deadline = bench_deadline(max_seconds);
  uint64_t received = 0, bytes = 0, acked_through = 0;
  int status = 0;
  crmq_bench_sample_now(&result->start);
  /* Bounded by count and by the deadline (each wait ends at it). */
  while (received < count) {
    amqp_frame_t frame;
    status = bench_wait_frame(&conn, &frame, deadline);
    if (status != AMQP_STATUS_OK) {
      status = bench_fail(error, error_size, status, "after %llu deliveries: %s", (unsigned long long)received,
                          amqp_error_string2(status));
      break;
    }
    int completed = assemble(&a, &frame, error, error_size);
    /* Copied out: give the channel's pool back before the next read. */
    amqp_maybe_release_buffers_on_channel(conn.state, frame.channel);
    if (completed < 0) {
      status = completed;
      break;
    }
    if (completed) {
      received++;
      bytes += (uint64_t)a.body_size;
      if (received % ack_every == 0 || received == count) {
        status = amqp_basic_ack(conn.state, BENCH_CHANNEL, a.delivery_tag, 1);
        if (status != AMQP_STATUS_OK) {
          status = bench_fail(error, error_size, status, "basic.ack: %s", amqp_error_string2(status));
          break;
        }
        acked_through = a.delivery_tag;
      }
    }
  }
  if (status == 0) {
    /* A synchronous method after the last ack: once qos-ok is back the broker has the ack. */
    amqp_basic_qos(conn.state, BENCH_CHANNEL, 0, prefetch, 0);
    status = bench_reply_error(amqp_get_rpc_reply(conn.state), "basic.qos", error, error_size);
  }
  crmq_bench_sample_now(&result->end);
  (void)acked_through;
  result->status = status;
  result->messages = received;
  result->check = bytes;
done:
  free(a.buffer);
  bench_disconnect(&conn);
}
