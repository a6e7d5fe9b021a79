import CRabbitMQ

/// Entry points for `rabbitmq-bench` into conversions internal to this module, so it can
/// measure them without a broker. Not API: only visible through `@_spi(Benchmarks) import`,
/// and free to change with the benchmark.
@_spi(Benchmarks)
public enum RabbitMQBenchmarkSupport {
    /// Sends `table` through the C boundary and back `count` times, the way a headers table
    /// travels out in a publish and in with a delivery: converted to rabbitmq-c's
    /// `amqp_table_t` in a scratch pool, encoded with `amqp_encode_table`, decoded with
    /// `amqp_decode_table` into the same pool, converted back to a ``RabbitMQFieldTable``,
    /// compared with `table`, and the pool recycled.
    ///
    /// - Returns: How many round trips gave back a table equal to `table`: `count`, unless
    ///   the conversion loses something or rabbitmq-c rejects the table.
    public static func fieldTableRoundTrips(_ table: RabbitMQFieldTable, count: Int) -> Int {
        let scratch = ScratchPool()
        var capacity = 4096
        var buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        var matched = 0
        for _ in 0..<count {
            defer { scratch.recycle() }
            var cTable = scratch.table(table)
            var written = 0
            var status = amqp_encode_table(amqp_bytes_t(len: capacity, bytes: buffer), &cTable, &written)
            // Only a table bigger than any before it gets here: grow and encode it again.
            while status == AMQP_STATUS_TABLE_TOO_BIG.rawValue && capacity < Int(UInt32.max) {
                capacity *= 2
                buffer.deallocate()
                buffer = .allocate(byteCount: capacity, alignment: 8)
                written = 0
                status = amqp_encode_table(amqp_bytes_t(len: capacity, bytes: buffer), &cTable, &written)
            }
            guard status == AMQP_STATUS_OK.rawValue else { continue }
            // The decoded strings point into buffer, so they are copied out before it is reused.
            var decoded = amqp_table_t()
            var consumed = 0
            let decodeStatus = amqp_decode_table(
                amqp_bytes_t(len: written, bytes: buffer), scratch.pool, &decoded, &consumed)
            guard decodeStatus == AMQP_STATUS_OK.rawValue, consumed == written else { continue }
            if (try? RabbitMQFieldTable(cTable: decoded)) == table { matched += 1 }
        }
        return matched
    }
}
