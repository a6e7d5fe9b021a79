#ifndef CRABBITMQ_BASELINE_INTERNAL_H
#define CRABBITMQ_BASELINE_INTERNAL_H

/* rabbitmq-c moved its headers under rabbitmq-c/ in 0.12; Debian 12 ships 0.11. */
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

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baseline.h"

/* Every scenario uses channel 1 of a connection of its own. */
#define BENCH_CHANNEL 1

/* One open connection with channel 1 open. */
typedef struct bench_conn {
  amqp_connection_state_t state;
} bench_conn;

/* Formats a message into error (snprintf semantics) and returns status. */
int bench_fail(char *error, size_t error_size, int status, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* Describes a failed blocking rabbitmq-c call from its amqp_rpc_reply_t. */
int bench_reply_error(amqp_rpc_reply_t reply, const char *what, char *error, size_t error_size);

/* Connects, logs in with PLAIN and opens channel 1. Returns 0 or a negative status. */
int bench_connect(const crmq_bench_endpoint *endpoint, bench_conn *conn, char *error, size_t error_size);

/* Closes channel 1 and the connection (best effort) and destroys the state. */
void bench_disconnect(bench_conn *conn);

/* Waits for the next frame until deadline_ns (CLOCK_MONOTONIC); a deadline of 0 only
 * tries. Returns amqp_simple_wait_frame_noblock's status. */
int bench_wait_frame(bench_conn *conn, amqp_frame_t *frame, uint64_t deadline_ns);

/* A deadline max_seconds from now. */
uint64_t bench_deadline(double max_seconds);

/* malloc'd body_size bytes of a fixed pattern (at least 1 byte allocated). */
uint8_t *bench_make_body(size_t body_size);

/* The six-entry headers table of the publish-headers and field-table scenarios, in entries;
 * the Swift side uses an equal RabbitMQFieldTable (SwiftScenarios.headers). */
#define BENCH_HEADER_COUNT 6
void bench_make_headers(amqp_table_entry_t entries[BENCH_HEADER_COUNT], amqp_table_t *table);

/* Publishes count fire-and-forget messages then does a queue.declare round trip;
 * *queued gets the queue's message count. Shared by the scenario and the fill helper. */
int bench_publish_loop(bench_conn *conn, const char *queue, size_t body_size, uint64_t count, int with_headers,
                       uint64_t deadline_ns, crmq_bench_result *measure, uint32_t *queued, char *error,
                       size_t error_size);

/* Fails the result unless status is 0. */
#define BENCH_RESULT_FAIL(res, code, ...) \
  ((res)->status = bench_fail((res)->error, sizeof((res)->error), (code), __VA_ARGS__))

/* Server methods that end a scenario early: the broker closed the channel or connection,
 * or cancelled the consumer. Returns 0 for any other frame. */
int bench_check_close(const amqp_frame_t *frame, char *error, size_t error_size);

#endif /* CRABBITMQ_BASELINE_INTERNAL_H */
