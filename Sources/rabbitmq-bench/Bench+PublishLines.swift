import ArgumentParser
import CRabbitMQBaseline
import Glibc

extension Bench {
    /// The C baseline of `rmq publish` reading standard input (scripts/rmq-pipe-bench.sh):
    /// getline and amqp_basic_publish per line, nothing else. The script measures the whole
    /// process's CPU time, as it does rmq's, so both pay their start-up and connection.
    ///
    /// Synchronous on purpose: ``BenchMain`` runs a plain command on the main thread, which
    /// is not part of Swift's cooperative pool, so the blocking C loop may run right there.
    struct PublishLines: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "publish-lines",
            abstract: "Publishes one message per line of standard input with rabbitmq-c (for rmq-pipe-bench.sh).",
            shouldDisplay: false)

        @Option(name: .long, help: "The queue (the routing key through the default exchange).")
        var queue: String

        @Option(
            name: .long,
            help: "Only declare the queue (transient, with this x-max-length), purge it and exit; stdin is not read.")
        var resetQueue: Int?

        @Flag(name: .long, help: "Only delete the queue and exit; stdin is not read.")
        var deleteQueue = false

        func validate() throws {
            if let resetQueue, resetQueue < 1 { throw ValidationError("--reset-queue must be at least 1") }
            if resetQueue != nil && deleteQueue { throw ValidationError("--reset-queue or --delete-queue, not both") }
        }

        func run() throws {
            let endpoint = try BenchEndpoint(uri: brokerURL())
            var error = [CChar](repeating: 0, count: 256)
            var published: UInt64 = 0
            let status = endpoint.withC { endpoint in
                if let resetQueue {
                    return crmq_bench_queue_reset(endpoint, queue, Int64(resetQueue), &error, error.count)
                }
                if deleteQueue { return crmq_bench_queue_delete(endpoint, queue, &error, error.count) }
                return crmq_bench_publish_lines(endpoint, "", queue, STDIN_FILENO, &published, &error, error.count)
            }
            if status != 0 { throw BenchError("C baseline: \(String(cBuffer: error)) (status \(status))") }
            if resetQueue == nil && !deleteQueue { log("publish-lines: \(published) messages") }
        }
    }
}
