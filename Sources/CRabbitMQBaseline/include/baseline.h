#ifndef CRABBITMQ_BASELINE_H
#define CRABBITMQ_BASELINE_H

/* The raw rabbitmq-c baseline that rabbitmq-bench measures the Swift layer against.
 *
 * Each scenario is written the way a careful C programmer would write it with rabbitmq-c
 * 0.11 alone: one connection, one channel, blocking calls on the calling thread, frames read
 * with amqp_simple_wait_frame_noblock, no allocation inside the measured loop. Every
 * function blocks: call it from a thread of its own, never from Swift's cooperative pool.
 *
 * This header is deliberately free of rabbitmq-c types, so Swift code that imports the
 * module does not see the C library. */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where and how to connect; the same values the Swift side uses. */
typedef struct crmq_bench_endpoint {
  const char *host;
  int port;
  const char *vhost;
  const char *user;
  const char *password;
  int channel_max; /* 0: 256, like RabbitMQConfiguration */
  int frame_max;   /* 0: 131072 */
  int heartbeat;   /* seconds; 30 like RabbitMQConfiguration */
  int tls;            /* 1: rabbitmq-c's OpenSSL socket, verifying the broker by `cacert` */
  const char *cacert; /* PEM file of the CA (TLS); NULL: no peer verification */
} crmq_bench_endpoint;

/* A point in time for one measurement: wall clock and the process's CPU time, the
 * latter from getrusage(RUSAGE_SELF), so it counts every thread of the process. */
typedef struct crmq_bench_sample {
  uint64_t wall_ns;
  uint64_t user_ns;
  uint64_t system_ns;
} crmq_bench_sample;

/* What a scenario measured. start and end bracket the measured loop only: connecting,
 * declaring and setting up consumers happen outside them. */
typedef struct crmq_bench_result {
  int status;       /* 0 on success; otherwise error holds the reason */
  char error[256];
  uint64_t messages;
  crmq_bench_sample start;
  crmq_bench_sample end;
  uint64_t p50_ns;  /* latency scenarios only, else 0 */
  uint64_t p99_ns;
  uint64_t check;   /* scenario specific: see each function */
} crmq_bench_result;

/* Takes a sample now (clock_gettime(CLOCK_MONOTONIC) and getrusage(RUSAGE_SELF)). */
void crmq_bench_sample_now(crmq_bench_sample *out);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t crmq_bench_monotonic_ns(void);

/* Sorts values in place and returns the nearest-rank percentile (fraction in 0...1);
 * 0 for an empty array. Both sides use it, so their percentiles mean the same thing. */
uint64_t crmq_bench_percentile(uint64_t *values, size_t count, double fraction);

/* --- Harness helpers (not measured) ------------------------------------------------- */

/* Declares a non-durable queue (max_length > 0 adds x-max-length, dropping the oldest
 * messages so fire-and-forget runs keep broker memory bounded), then purges it.
 * Returns 0 or a negative status; error gets the reason. */
int crmq_bench_queue_reset(const crmq_bench_endpoint *endpoint, const char *queue, int64_t max_length,
                           char *error, size_t error_size);

/* Deletes a queue; 0 or a negative status. */
int crmq_bench_queue_delete(const crmq_bench_endpoint *endpoint, const char *queue, char *error,
                            size_t error_size);

/* Declares the queue passively and reports its message and consumer counts. */
int crmq_bench_queue_counts(const crmq_bench_endpoint *endpoint, const char *queue, uint32_t *messages,
                            uint32_t *consumers, char *error, size_t error_size);

/* Publishes count transient messages of body_size bytes to queue and returns once the
 * broker has them (a synchronous round trip on the same channel). Fills a queue for the
 * consume scenario. */
int crmq_bench_fill(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size, uint64_t count,
                    char *error, size_t error_size);

/* --- Scenarios ---------------------------------------------------------------------- */

/* Fire-and-forget: count transient publishes of body_size bytes to queue through the
 * default exchange; with_headers adds a six-entry headers table (built once, as a C
 * programmer would). The measurement ends after a queue.declare round trip on the same
 * channel, i.e. once the broker has processed every publish; check = the queue's message
 * count then. */
void crmq_bench_publish(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size, uint64_t count,
                        int with_headers, double max_seconds, crmq_bench_result *result);

/* Confirms, streaming: confirm.select, then publishes with up to window messages awaiting
 * their basic.ack/nack; ends when every publish is confirmed. check = nacks. */
void crmq_bench_publish_confirm_stream(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size,
                                       uint64_t count, uint32_t window, double max_seconds,
                                       crmq_bench_result *result);

/* Confirms, one at a time: publish, wait for its ack, repeat. p50/p99 = publish-to-ack
 * latency. check = nacks. */
void crmq_bench_publish_confirm_each(const crmq_bench_endpoint *endpoint, const char *queue, size_t body_size,
                                     uint64_t count, double max_seconds, crmq_bench_result *result);

/* Consumes count messages from a pre-filled queue with manual acks: basic.qos prefetch,
 * basic.ack multiple every ack_every messages; the body is copied out of rabbitmq-c's pool
 * into a reused buffer. Ends after the last ack and a basic.qos round trip. check = bytes
 * received. */
void crmq_bench_consume(const crmq_bench_endpoint *endpoint, const char *queue, uint64_t count,
                        uint16_t prefetch, uint32_t ack_every, double max_seconds, crmq_bench_result *result);

/* RPC client: count sequential calls to server_queue over direct reply-to
 * (amq.rabbitmq.reply-to, consumed no-ack), each with a fresh correlation id, each waiting
 * for its reply. p50/p99 = call latency. check = replies whose correlation id and body
 * equal the request's. */
void crmq_bench_rpc_client(const crmq_bench_endpoint *endpoint, const char *server_queue, size_t body_size,
                           uint64_t count, double max_seconds, crmq_bench_result *result);

/* RPC echo server: consumes queue (no-ack) and publishes each body back to its reply_to
 * with the same correlation_id. Runs until max_seconds pass, the parent process goes away
 * (getppid changes) or the connection fails. Returns 0 after a timely stop, else a
 * negative status; error gets the reason. rabbitmq-bench runs it in a child process. */
int crmq_bench_rpc_server(const crmq_bench_endpoint *endpoint, const char *queue, double max_seconds, char *error,
                          size_t error_size);

/* The rmq pipe's baseline (scripts/rmq-pipe-bench.sh): reads lines from descriptor fd with
 * getline until end of input and publishes each (its newline removed, no properties, no
 * confirms) to exchange with routing_key, then closes the connection. *published gets the
 * count. Returns 0 or a negative status; error gets the reason. Not timed: the script
 * measures the whole process's CPU time, as it does rmq's. */
int crmq_bench_publish_lines(const crmq_bench_endpoint *endpoint, const char *exchange, const char *routing_key,
                             int fd, uint64_t *published, char *error, size_t error_size);

/* Field tables, without a broker: count round trips, each building the six-entry headers
 * table of the publish-headers scenario, encoding it with amqp_encode_table into a reused
 * buffer, decoding it with amqp_decode_table into a pool and recycling the pool. No
 * deadline: nothing waits, so the time is proportional to count. check = round trips whose
 * decoded table equals the built one. */
void crmq_bench_field_table(uint64_t count, crmq_bench_result *result);

#ifdef __cplusplus
}
#endif

#endif /* CRABBITMQ_BASELINE_H */
