/// One benchmark scenario: what is measured, with which body size and how many messages.
struct Scenario: Sendable {
    /// The scenarios `--scenario` accepts.
    enum Kind: String, CaseIterable, Sendable {
        /// Fire-and-forget transient publishes to a queue through the default exchange.
        case publish
        /// The same with a six-entry headers table: the field-table conversion end to end.
        case publishHeaders = "publish-headers"
        /// Publisher confirms with up to `confirmWindow` outstanding.
        case confirmStream = "confirm-stream"
        /// Publish, wait for the confirm, repeat.
        case confirmEach = "confirm-each"
        /// Consume a pre-filled queue, manual acks (prefetch 1000, ack multiple every 100).
        case consume
        /// Sequential request/reply over direct reply-to against an echo server process.
        case rpc
        /// Broker-free: the publish-headers table converted to rabbitmq-c's form, encoded,
        /// decoded and converted back; one round trip per message. The size is not used.
        case fieldTable = "field-table"
        /// Broker-free, Swift only: a RabbitMQEnvelope encoded to JSON and decoded back; the
        /// size is the length of a string in its payload.
        case envelope
        /// `rpc` with the patterns layer's RabbitMQRPCClient, against the same echo server and
        /// the same C client.
        case rpcPatterns = "rpc-patterns"
        /// `publish` over TLS (RABBITMQ_TLS_URL), C through rabbitmq-c's OpenSSL socket.
        case publishTLS = "publish-tls"
        /// `consume` over TLS (the queue is filled over plain TCP).
        case consumeTLS = "consume-tls"

        /// Whether the scenario runs on the TLS endpoint.
        var overTLS: Bool { self == .publishTLS || self == .consumeTLS }

        /// What the scenario does, whatever the transport.
        var workload: Kind {
            switch self {
            case .publishTLS: .publish
            case .consumeTLS: .consume
            default: self
            }
        }

        var hasLatency: Bool { self == .confirmEach || self == .rpc || self == .rpcPatterns }

        /// Whether the scenario calls the C echo server (started once, in a child process).
        var usesEchoServer: Bool { self == .rpc || self == .rpcPatterns }

        /// Whether the C baseline has this scenario; without, the report shows Swift's
        /// absolute numbers and no ratio or target.
        var hasCBaseline: Bool { self != .envelope }

        /// Whether runs declare and use a queue of their own (reset before each run).
        var usesQueue: Bool {
            switch self {
            case .publish, .publishHeaders, .confirmStream, .confirmEach, .consume, .publishTLS, .consumeTLS: true
            case .rpc, .rpcPatterns, .fieldTable, .envelope: false
            }
        }

        /// Whether the scenario talks to a broker: its loop awaits, so where it runs from (its
        /// caller) matters. The broker-free ones are synchronous loops.
        var touchesBroker: Bool { self != .fieldTable && self != .envelope }

        /// Whether `size` means anything; when not, it is 0 and left out of the label.
        var usesSize: Bool { self != .fieldTable }

        /// Body sizes run when `--size` is not given.
        var defaultSizes: [Int] {
            switch self {
            case .publish, .publishTLS: [16, 1024, 65536]
            case .fieldTable: [0]
            case .envelope: [16, 16384]
            default: [16]
            }
        }

        /// Messages per run when `--messages` is not given: sized so the default set fits in
        /// about six minutes on a 2-core machine (C and four Swift callers per round).
        func defaultMessages(size: Int, smoke: Bool) -> Int {
            if overTLS { return workload.defaultMessages(size: size, smoke: smoke) }
            switch self {
            case .confirmEach, .rpc, .rpcPatterns: return smoke ? 50 : 3_000
            case .publish where size >= 65536: return smoke ? 100 : 6_000
            case .publish where size >= 1024: return smoke ? 200 : 75_000
            case .publish: return smoke ? 200 : 150_000
            case .publishHeaders, .confirmStream, .consume: return smoke ? 200 : 75_000
            case .fieldTable: return smoke ? 200 : 1_000_000
            case .envelope where size >= 16384: return smoke ? 20 : 10_000
            case .envelope: return smoke ? 200 : 50_000
            case .publishTLS, .consumeTLS: return 0  // as their workload (above)
            }
        }
    }

    // Not here, and why:
    // - A C `envelope`: rabbitmq-c has no message format of its own, and a hand-written C JSON
    //   codec would measure that codec, not a baseline; the scenario reports Swift's absolute
    //   numbers (hasCBaseline).
    // - Patterns scenarios other than the envelope and RPC (retry through TTL queues,
    //   exchanges): their cost is the core's publish and consume plus broker-side delays.
    // A new scenario needs a Kind case (and its answers in the properties above), a
    // SwiftScenarios function (and a CBaseline one), and branches in Runner.prepare, run and
    // problem and in ScenarioReport.targets; the table and JSON pick it up unchanged.

    static let prefetch = 1000
    static let ackEvery = 100
    static let confirmWindow = 1000
    /// Publish queues keep at most this many messages (x-max-length drops the oldest), so
    /// fire-and-forget runs cannot fill the broker's memory.
    static let maxQueueLength = 1000

    var kind: Kind
    var size: Int
    var messages: Int

    var label: String { kind.usesSize ? "\(kind.rawValue) \(Self.format(size: size))" : kind.rawValue }

    static func format(size: Int) -> String {
        if size >= 1024 && size % 1024 == 0 { return "\(size / 1024) KiB" }
        return "\(size) B"
    }

    /// The scenarios to run: every kind (or the named ones) at its default sizes (or `size`).
    /// Without names, the TLS scenarios only when `tls` (a TLS endpoint is configured).
    static func selection(names: [String], size: Int?, messages: Int?, smoke: Bool, tls: Bool) throws -> [Scenario] {
        var kinds: [Kind] = []
        for name in names.flatMap({ $0.split(separator: ",").map(String.init) }) {
            guard let kind = Kind(rawValue: name) else {
                let known = Kind.allCases.map(\.rawValue).joined(separator: ", ")
                throw BenchError("unknown scenario '\(name)' (known: \(known))")
            }
            if !kinds.contains(kind) { kinds.append(kind) }
        }
        if kinds.isEmpty { kinds = Kind.allCases.filter { tls || !$0.overTLS } }
        if !tls, let kind = kinds.first(where: \.overTLS) {
            throw BenchError("scenario \(kind.rawValue) needs RABBITMQ_TLS_URL (an amqps:// URL with cacertfile)")
        }
        return kinds.flatMap { kind in
            ((kind.usesSize ? size.map { [$0] } : nil) ?? kind.defaultSizes).map { size in
                Scenario(kind: kind, size: size, messages: messages ?? kind.defaultMessages(size: size, smoke: smoke))
            }
        }
    }
}
