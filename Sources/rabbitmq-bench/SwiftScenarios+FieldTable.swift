@_spi(Benchmarks) import RabbitMQ

extension SwiftScenarios {
    /// The field-table conversion alone, without a broker: ``headers`` to rabbitmq-c's
    /// `amqp_table_t` and back through `amqp_encode_table` / `amqp_decode_table`, `count`
    /// times. That conversion is internal to the RabbitMQ module; `@_spi(Benchmarks)` reaches
    /// it. check = round trips that gave back an equal table.
    func fieldTable(count: Int) async -> RunResult {
        // A CPU-bound loop of about a second: on a thread of its own, like the C side, rather
        // than holding one of the cooperative pool's few threads.
        await DedicatedThread.run {
            let start = RunResult.sample()
            let matched = RabbitMQBenchmarkSupport.fieldTableRoundTrips(Self.headers, count: count)
            let end = RunResult.sample()
            return RunResult(messages: UInt64(count), start: start, end: end, p50: nil, p99: nil, check: UInt64(matched))
        }
    }
}
