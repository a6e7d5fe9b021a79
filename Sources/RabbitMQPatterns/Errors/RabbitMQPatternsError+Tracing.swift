import RabbitMQ

/// A span that ends with one of these errors says which by its code in `error.type`
/// (`remote error`, `timeout`, ...), as spans do for ``RabbitMQError``.
extension RabbitMQPatternsError: SpanErrorType {
    package var spanErrorType: String { code.description }
}
