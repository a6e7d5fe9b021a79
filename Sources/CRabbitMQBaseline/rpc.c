/* Request/reply over direct reply-to: the client consumes the pseudo-queue
 * amq.rabbitmq.reply-to (no-ack, on the channel it publishes on) and names it in reply_to;
 * the echo server publishes each request body back to that address with the request's
 * correlation_id. */

#include "internal.h"

#include <unistd.h>

#define REPLY_TO "amq.rabbitmq.reply-to"
#define SHORT_STRING_MAX 256

/* A message being assembled from frames, keeping the two properties RPC needs. */
typedef struct rpc_message {
  uint8_t *body;
  size_t capacity;
  int64_t body_size;
  size_t received;
  int active;
  char correlation_id[SHORT_STRING_MAX];
  size_t correlation_id_len;
  char reply_to[SHORT_STRING_MAX];
  size_t reply_to_len;
} rpc_message;

static void copy_short(char *to, size_t *to_len, amqp_bytes_t from) {
  size_t len = from.len < SHORT_STRING_MAX ? from.len : SHORT_STRING_MAX;
  if (len > 0) memcpy(to, from.bytes, len);
  *to_len = len;
}

/* Takes one frame; returns 1 when it completed a message, 0 when not, negative on error. */
static int rpc_assemble(rpc_message *m, const amqp_frame_t *frame, char *error, size_t error_size) {
  switch (frame->frame_type) {
    case AMQP_FRAME_METHOD: {
      int status = bench_check_close(frame, error, error_size);
      if (status != 0) return status;
      if (frame->payload.method.id != AMQP_BASIC_DELIVER_METHOD) return 0;
      m->active = 1;
      m->body_size = -1;
      m->received = 0;
      m->correlation_id_len = 0;
      m->reply_to_len = 0;
      return 0;
    }
    case AMQP_FRAME_HEADER: {
      if (!m->active) return bench_fail(error, error_size, -1, "content header without a delivery");
      const amqp_basic_properties_t *p = frame->payload.properties.decoded;
      if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        copy_short(m->correlation_id, &m->correlation_id_len, p->correlation_id);
      if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG) copy_short(m->reply_to, &m->reply_to_len, p->reply_to);
      m->body_size = (int64_t)frame->payload.properties.body_size;
      if ((size_t)m->body_size > m->capacity) {
        uint8_t *bigger = realloc(m->body, (size_t)m->body_size);
        if (bigger == NULL) return bench_fail(error, error_size, -1, "out of memory");
        m->body = bigger;
        m->capacity = (size_t)m->body_size;
      }
      if (m->body_size == 0) {
        m->active = 0;
        return 1;
      }
      return 0;
    }
    case AMQP_FRAME_BODY: {
      if (!m->active || m->body_size < 0) return bench_fail(error, error_size, -1, "content body without a header");
      amqp_bytes_t fragment = frame->payload.body_fragment;
      if (m->received + fragment.len > (size_t)m->body_size)
        return bench_fail(error, error_size, -1, "content body longer than announced");
      memcpy(m->body + m->received, fragment.bytes, fragment.len);
      m->received += fragment.len;
      if (m->received == (size_t)m->body_size) {
        m->active = 0;
        return 1;
      }
      return 0;
    }
    default:
      return 0;
  }
}

void crmq_bench_rpc_client(const crmq_bench_endpoint *endpoint, const char *server_queue, size_t body_size,
                           uint64_t count, double max_seconds, crmq_bench_result *result) {
  memset(result, 0, sizeof(*result));
  char *error = result->error;
  size_t error_size = sizeof(result->error);
  bench_conn conn;
  if ((result->status = bench_connect(endpoint, &conn, error, error_size)) != 0) return;
  uint8_t *buffer = bench_make_body(body_size);
  uint64_t *latencies = malloc((count > 0 ? count : 1) * sizeof(uint64_t));
  rpc_message reply;
  memset(&reply, 0, sizeof(reply));
  reply.body = malloc(4096);
  reply.capacity = 4096;
  if (buffer == NULL || latencies == NULL || reply.body == NULL) {
    BENCH_RESULT_FAIL(result, -1, "out of memory");
    goto done;
  }
  amqp_basic_consume(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(REPLY_TO), amqp_empty_bytes, 0, 1, 0,
                     amqp_empty_table);
  if ((result->status = bench_reply_error(amqp_get_rpc_reply(conn.state), "basic.consume " REPLY_TO, error,
                                          error_size)) != 0)
    goto done;

  amqp_bytes_t body = {body_size, buffer};
  amqp_bytes_t routing_key = amqp_cstring_bytes(server_queue);
  char correlation_id[32];
  amqp_basic_properties_t properties;
  memset(&properties, 0, sizeof(properties));
  properties._flags = AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
  properties.reply_to = amqp_cstring_bytes(REPLY_TO);
  uint64_t deadline = bench_deadline(max_seconds);
  uint64_t calls = 0, matched = 0;
  int status = 0;

  crmq_bench_sample_now(&result->start);
  for (; calls < count && status == 0; calls++) {
    uint64_t started = crmq_bench_monotonic_ns();
    int len = snprintf(correlation_id, sizeof(correlation_id), "%llu", (unsigned long long)calls);
    properties.correlation_id.bytes = correlation_id;
    properties.correlation_id.len = (size_t)len;
    status = amqp_basic_publish(conn.state, BENCH_CHANNEL, amqp_empty_bytes, routing_key, 0, 0, &properties, body);
    if (status != AMQP_STATUS_OK) {
      status = bench_fail(error, error_size, status, "amqp_basic_publish: %s", amqp_error_string2(status));
      break;
    }
    /* Frames until the reply is complete; bounded by the deadline (each wait ends at it)
     * and by a frame budget. */
    int completed = 0;
    for (int frames = 0; frames < 1024 && !completed; frames++) {
      amqp_frame_t frame;
      status = bench_wait_frame(&conn, &frame, deadline);
      if (status != AMQP_STATUS_OK) {
        status = bench_fail(error, error_size, status, "waiting for reply %llu: %s", (unsigned long long)calls,
                            amqp_error_string2(status));
        break;
      }
      completed = frame.channel == BENCH_CHANNEL ? rpc_assemble(&reply, &frame, error, error_size) : 0;
      amqp_maybe_release_buffers_on_channel(conn.state, frame.channel);
      if (completed < 0) {
        status = completed;
        break;
      }
    }
    if (status != 0) break;
    if (!completed) {
      status = bench_fail(error, error_size, -1, "no reply to call %llu", (unsigned long long)calls);
      break;
    }
    latencies[calls] = crmq_bench_monotonic_ns() - started;
    if (reply.correlation_id_len == (size_t)len && memcmp(reply.correlation_id, correlation_id, (size_t)len) == 0 &&
        reply.received == body_size && (body_size == 0 || memcmp(reply.body, buffer, body_size) == 0))
      matched++;
  }
  crmq_bench_sample_now(&result->end);
  result->status = status;
  result->messages = calls;
  result->check = matched;
  result->p50_ns = crmq_bench_percentile(latencies, calls, 0.50);
  result->p99_ns = crmq_bench_percentile(latencies, calls, 0.99);
done:
  free(reply.body);
  free(latencies);
  free(buffer);
  bench_disconnect(&conn);
}

int crmq_bench_rpc_server(const crmq_bench_endpoint *endpoint, const char *queue, double max_seconds, char *error,
                          size_t error_size) {
  bench_conn conn;
  int status = bench_connect(endpoint, &conn, error, error_size);
  if (status != 0) return status;
  rpc_message request;
  memset(&request, 0, sizeof(request));
  request.body = malloc(4096);
  request.capacity = 4096;
  if (request.body == NULL) {
    bench_disconnect(&conn);
    return bench_fail(error, error_size, -1, "out of memory");
  }
  amqp_basic_consume(conn.state, BENCH_CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0,
                     amqp_empty_table);
  status = bench_reply_error(amqp_get_rpc_reply(conn.state), "basic.consume", error, error_size);

  pid_t parent = getppid();
  uint64_t deadline = bench_deadline(max_seconds);
  /* Bounded by the deadline; also ends when the parent (the benchmark) goes away. */
  while (status == 0) {
    uint64_t now = crmq_bench_monotonic_ns();
    if (now >= deadline || getppid() != parent) break;
    uint64_t slice = now + 200000000u; /* wake up 5 times a second to check the above */
    amqp_frame_t frame;
    status = bench_wait_frame(&conn, &frame, slice < deadline ? slice : deadline);
    if (status == AMQP_STATUS_TIMEOUT) {
      status = 0;
      continue;
    }
    if (status != AMQP_STATUS_OK) {
      status = bench_fail(error, error_size, status, "reading requests: %s", amqp_error_string2(status));
      break;
    }
    int completed = frame.channel == BENCH_CHANNEL ? rpc_assemble(&request, &frame, error, error_size) : 0;
    amqp_maybe_release_buffers_on_channel(conn.state, frame.channel);
    if (completed < 0) {
      status = completed;
      break;
    }
    if (!completed || request.reply_to_len == 0) continue;
    amqp_basic_properties_t properties;
    memset(&properties, 0, sizeof(properties));
    if (request.correlation_id_len > 0) {
      properties._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
      properties.correlation_id.bytes = request.correlation_id;
      properties.correlation_id.len = request.correlation_id_len;
    }
    amqp_bytes_t reply_to = {request.reply_to_len, request.reply_to};
    amqp_bytes_t body = {(size_t)request.body_size, request.body};
    status = amqp_basic_publish(conn.state, BENCH_CHANNEL, amqp_empty_bytes, reply_to, 0, 0, &properties, body);
    if (status != AMQP_STATUS_OK)
      status = bench_fail(error, error_size, status, "publishing a reply: %s", amqp_error_string2(status));
  }
  free(request.body);
  bench_disconnect(&conn);
  return status;
}
