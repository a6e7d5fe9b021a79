/* The field-table codec alone, without a broker: what a headers table costs on its way into
 * and out of a frame, for comparison with the Swift value's conversion to and from it. */

#include "internal.h"

/* Far more than the six entries need (about 150 bytes encoded). */
#define ENCODED_CAPACITY 4096

static int bytes_equal(amqp_bytes_t a, amqp_bytes_t b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

/* Compares the kinds the headers table uses; any other kind counts as different. */
static int value_equal(const amqp_field_value_t *a, const amqp_field_value_t *b) {
  if (a->kind != b->kind) return 0;
  switch (a->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
      return a->value.boolean == b->value.boolean;
    case AMQP_FIELD_KIND_I64:
      return a->value.i64 == b->value.i64;
    case AMQP_FIELD_KIND_TIMESTAMP:
      return a->value.u64 == b->value.u64;
    case AMQP_FIELD_KIND_F64:
      return a->value.f64 == b->value.f64;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return bytes_equal(a->value.bytes, b->value.bytes);
    default:
      return 0;
  }
}

/* Entry by entry, in order, as RabbitMQFieldTable's == compares. */
static int table_equal(const amqp_table_t *a, const amqp_table_t *b) {
  if (a->num_entries != b->num_entries) return 0;
  for (int i = 0; i < a->num_entries; i++) {
    if (!bytes_equal(a->entries[i].key, b->entries[i].key) || !value_equal(&a->entries[i].value, &b->entries[i].value))
      return 0;
  }
  return 1;
}

void crmq_bench_field_table(uint64_t count, crmq_bench_result *result) {
  memset(result, 0, sizeof(*result));
  uint8_t *buffer = malloc(ENCODED_CAPACITY);
  if (buffer == NULL) {
    BENCH_RESULT_FAIL(result, -1, "out of memory");
    return;
  }
  /* The page size of the Swift side's ScratchPool. */
  amqp_pool_t pool;
  init_amqp_pool(&pool, 16 * 1024);
  amqp_bytes_t capacity = {ENCODED_CAPACITY, buffer};
  uint64_t done = 0, matched = 0;

  crmq_bench_sample_now(&result->start);
  for (; done < count; done++) {
    amqp_table_entry_t entries[BENCH_HEADER_COUNT];
    amqp_table_t headers;
    bench_make_headers(entries, &headers);
    size_t written = 0;
    int status = amqp_encode_table(capacity, &headers, &written);
    if (status != AMQP_STATUS_OK) {
      BENCH_RESULT_FAIL(result, status, "amqp_encode_table: %s", amqp_error_string2(status));
      break;
    }
    /* The decoded strings point into buffer, so they are compared before it is reused. */
    amqp_bytes_t encoded = {written, buffer};
    amqp_table_t decoded;
    size_t consumed = 0;
    status = amqp_decode_table(encoded, &pool, &decoded, &consumed);
    if (status != AMQP_STATUS_OK) {
      BENCH_RESULT_FAIL(result, status, "amqp_decode_table: %s", amqp_error_string2(status));
      break;
    }
    if (consumed == written && table_equal(&headers, &decoded)) matched++;
    recycle_amqp_pool(&pool);
  }
  crmq_bench_sample_now(&result->end);
  result->messages = done;
  result->check = matched;
  empty_amqp_pool(&pool);
  free(buffer);
}
