/* The C side of scripts/rmq-pipe-bench.sh: what `rmq publish` does with standard input,
 * written as a plain rabbitmq-c program would: getline, one amqp_basic_publish per line,
 * no confirms, then connection.close. */

#include "internal.h"

#include <errno.h>
#include <unistd.h>

int crmq_bench_publish_lines(const crmq_bench_endpoint *endpoint, const char *exchange, const char *routing_key,
                             int fd, uint64_t *published, char *error, size_t error_size) {
  *published = 0;
  /* Our own FILE on a duplicate, so closing it leaves the caller's descriptor open. */
  int own = dup(fd);
  FILE *input = own >= 0 ? fdopen(own, "r") : NULL;
  if (input == NULL) {
    if (own >= 0) close(own);
    return bench_fail(error, error_size, -1, "cannot read descriptor %d: %s", fd, strerror(errno));
  }
  bench_conn conn;
  int status = bench_connect(endpoint, &conn, error, error_size);
  if (status != 0) {
    fclose(input);
    return status;
  }
  /* No properties, as `rmq publish` without flags sends (transient by default). */
  amqp_basic_properties_t properties;
  memset(&properties, 0, sizeof(properties));
  amqp_bytes_t exchange_bytes = amqp_cstring_bytes(exchange);
  amqp_bytes_t key = amqp_cstring_bytes(routing_key);
  char *line = NULL;
  size_t capacity = 0;
  ssize_t length;
  /* Bounded by the input: one publish per line, and a failed publish ends the loop. */
  while ((length = getline(&line, &capacity, input)) >= 0) {
    /* Like rmq: the newline goes, a carriage return before it stays. */
    if (length > 0 && line[length - 1] == '\n') length--;
    amqp_bytes_t body = {(size_t)length, line};
    status = amqp_basic_publish(conn.state, BENCH_CHANNEL, exchange_bytes, key, 0, 0, &properties, body);
    if (status != AMQP_STATUS_OK) {
      status = bench_fail(error, error_size, status, "amqp_basic_publish: %s", amqp_error_string2(status));
      break;
    }
    (*published)++;
  }
  if (status == 0 && ferror(input)) status = bench_fail(error, error_size, -1, "reading: %s", strerror(errno));
  free(line);
  fclose(input);
  /* connection.close waits for close-ok, which the broker sends after every publish before
   * it: the same end as rmq's. */
  bench_disconnect(&conn);
  return status;
}
