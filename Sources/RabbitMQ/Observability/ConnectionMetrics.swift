import Metrics

/// What the I/O thread counted since its last report: plain integers, incremented on the
/// hot paths (a publish written, a delivery handed over, a confirm, a settlement) without
/// touching the metrics backend.
struct MetricsTally: Sendable {
    var published = 0
    var confirmed = 0
    var nacked = 0
    var returned = 0
    var delivered = 0
    var redelivered = 0
    var acked = 0
    var consumerNacked = 0
    var rejected = 0
    /// Publishes written or confirmed, or channels opened or closed: the gauges may have moved.
    var gaugesMayHaveMoved = false

    var isEmpty: Bool {
        published | confirmed | nacked | returned | delivered | redelivered | acked | consumerNacked | rejected == 0
            && !gaugesMayHaveMoved
    }
}

/// One connection's metrics (see ``RabbitMQMetrics`` for what each means), confined to its
/// I/O thread. The loop counts into a ``MetricsTally`` and calls ``report(_:gauges:)`` once
/// per turn; connection events (open, lost, recovered, blocked) arrive through
/// ``observe(_:now:)`` with the loop's clock, so tests drive it with any instants they like.
///
/// The metric objects are made once, when the connection has opened (a failed attempt
/// registers nothing). With swift-metrics' no-op default there is no `ConnectionMetrics` at
/// all (``make(connectionName:factory:)``): the loop only counts, and forgets.
///
/// The gauges are swift-metrics meters moved by differences: connections that share a name
/// (a pool, or one that reconnects) add up in one series instead of overwriting each other,
/// and a connection that ends takes back exactly what it added.
final class ConnectionMetrics {
    /// Gauge readings, taken by the loop only when ``MetricsTally/gaugesMayHaveMoved``.
    struct Gauges {
        var channels: Int
        var publishBuffered: Int
        var confirmsOutstanding: Int
    }

    private let connectionsOpen: Meter
    private let channelsOpen: Meter
    private let published: Counter
    private let confirmed: Counter
    private let nacked: Counter
    private let returned: Counter
    private let delivered: Counter
    private let redelivered: Counter
    private let acked: Counter
    private let consumerNacked: Counter
    private let rejected: Counter
    private let recoveries: Counter
    private let recoveryDuration: Metrics.Timer
    private let blockedDuration: Metrics.Timer
    private let publishBuffered: Meter
    private let confirmsOutstanding: Meter

    /// When the connection was lost, while it recovers.
    private var lostAt: ContinuousClock.Instant?
    /// When the broker blocked the connection, while it is blocked.
    private var blockedAt: ContinuousClock.Instant?
    /// The gauges as last reported: what this connection has added to each meter.
    private var last = Gauges(channels: 0, publishBuffered: 0, confirmsOutstanding: 0)
    /// Whether this connection counts in ``RabbitMQMetrics/connectionsOpen`` now.
    private var open = false
    /// The connection ended: nothing it reports moves the gauges any more.
    private var ended = false

    /// The metrics for a connection that has opened, or nil when `factory` is swift-metrics'
    /// no-op one (nothing to report, so nothing to gather).
    static func make(connectionName: String, factory: any MetricsFactory) -> ConnectionMetrics? {
        if factory is NOOPMetricsHandler { return nil }
        return ConnectionMetrics(connectionName: connectionName, factory: factory)
    }

    init(connectionName: String, factory: any MetricsFactory) {
        let dimensions = [(RabbitMQMetrics.connectionDimension, connectionName)]
        func counter(_ label: String) -> Counter { Counter(label: label, dimensions: dimensions, factory: factory) }
        func gauge(_ label: String) -> Meter { Meter(label: label, dimensions: dimensions, factory: factory) }
        func timer(_ label: String) -> Metrics.Timer {
            Metrics.Timer(label: label, dimensions: dimensions, preferredDisplayUnit: .milliseconds, factory: factory)
        }
        connectionsOpen = gauge(RabbitMQMetrics.connectionsOpen)
        channelsOpen = gauge(RabbitMQMetrics.channelsOpen)
        published = counter(RabbitMQMetrics.published)
        confirmed = counter(RabbitMQMetrics.confirmed)
        nacked = counter(RabbitMQMetrics.nacked)
        returned = counter(RabbitMQMetrics.returned)
        delivered = counter(RabbitMQMetrics.delivered)
        redelivered = counter(RabbitMQMetrics.redelivered)
        acked = counter(RabbitMQMetrics.consumerAcked)
        consumerNacked = counter(RabbitMQMetrics.consumerNacked)
        rejected = counter(RabbitMQMetrics.consumerRejected)
        recoveries = counter(RabbitMQMetrics.recoveries)
        recoveryDuration = timer(RabbitMQMetrics.recoveryDuration)
        blockedDuration = timer(RabbitMQMetrics.blockedDuration)
        publishBuffered = gauge(RabbitMQMetrics.publishBuffered)
        confirmsOutstanding = gauge(RabbitMQMetrics.confirmsOutstanding)
    }

    /// Reports what the tally counted and clears it; `gauges` is asked only when they may
    /// have moved.
    func report(_ tally: inout MetricsTally, gauges: () -> Gauges) {
        func add(_ count: Int, to counter: Counter) {
            if count != 0 { counter.increment(by: count) }
        }
        add(tally.published, to: published)
        add(tally.confirmed, to: confirmed)
        add(tally.nacked, to: nacked)
        add(tally.returned, to: returned)
        add(tally.delivered, to: delivered)
        add(tally.redelivered, to: redelivered)
        add(tally.acked, to: acked)
        add(tally.consumerNacked, to: consumerNacked)
        add(tally.rejected, to: rejected)
        if tally.gaugesMayHaveMoved { update(gauges()) }
        tally = MetricsTally()
    }

    private func update(_ now: Gauges) {
        guard !ended else { return }
        Self.move(channelsOpen, from: last.channels, to: now.channels)
        Self.move(publishBuffered, from: last.publishBuffered, to: now.publishBuffered)
        Self.move(confirmsOutstanding, from: last.confirmsOutstanding, to: now.confirmsOutstanding)
        last = now
    }

    private static func move(_ meter: Meter, from old: Int, to new: Int) {
        if new > old { meter.increment(by: Double(new - old)) } else if new < old { meter.decrement(by: Double(old - new)) }
    }

    private func setOpen(_ isOpen: Bool) {
        guard isOpen != open, !ended || !isOpen else { return }
        open = isOpen
        if isOpen { connectionsOpen.increment() } else { connectionsOpen.decrement() }
    }

    /// A connection event, at the loop's `now`.
    func observe(_ event: RabbitMQConnectionEvent, now: ContinuousClock.Instant) {
        switch event {
        case .connected:
            // During a recovery the connection counts as open once it is restored.
            if lostAt == nil { setOpen(true) }
        case .disconnected:
            setOpen(false)
            endBlocked(now: now)
            lostAt = now
        case .recovered:
            setOpen(true)
            recoveries.increment()
            if let lostAt { recoveryDuration.recordNanoseconds(Self.nanoseconds(lostAt.duration(to: now))) }
            lostAt = nil
        case .recoveryFailed, .closed:
            // Reported before the application hears of it: nothing is open any more.
            endBlocked(now: now)
            lostAt = nil
            finish()
        case .blocked:
            if blockedAt == nil { blockedAt = now }
        case .unblocked:
            endBlocked(now: now)
        case .recoveryAttempt, .queueRenamed, .topologyRecoveryFailed:
            break
        }
    }

    /// The connection ended: nothing is open, buffered or outstanding any more. Idempotent.
    func finish() {
        setOpen(false)
        update(Gauges(channels: 0, publishBuffered: 0, confirmsOutstanding: 0))
        ended = true
    }

    private func endBlocked(now: ContinuousClock.Instant) {
        guard let blockedAt else { return }
        blockedDuration.recordNanoseconds(Self.nanoseconds(blockedAt.duration(to: now)))
        self.blockedAt = nil
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
