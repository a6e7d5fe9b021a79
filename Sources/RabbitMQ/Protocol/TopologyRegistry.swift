/// What this connection declared successfully, in declaration order, so recovery can
/// declare it again: exchanges, queues (server-named ones get a new name) and bindings.
/// Consumers, prefetch and confirm mode are recorded by their channels.
///
/// Pure value; mutated only on the I/O thread, only after the broker said ok. Passive
/// declarations are not recorded; deletions and unbinds forget what they removed, so
/// nothing the application deleted is ever resurrected.
struct TopologyRegistry: Sendable {
    struct Exchange: Sendable, Equatable {
        var name: String
        var type: String
        var durable: Bool
        var autoDelete: Bool
        var isInternal: Bool
        var arguments: RabbitMQFieldTable
    }

    struct Queue: Sendable, Equatable {
        /// The name asked for; empty for a server-named queue.
        var requestedName: String
        /// The name the broker uses now.
        var name: String
        var durable: Bool
        var exclusive: Bool
        var autoDelete: Bool
        var arguments: RabbitMQFieldTable

        var isServerNamed: Bool { requestedName.isEmpty }
    }

    struct Binding: Sendable, Equatable {
        enum Destination: Sendable, Equatable { case queue, exchange }
        var destinationKind: Destination
        var destination: String
        var source: String
        var routingKey: String
        var arguments: RabbitMQFieldTable
    }

    private(set) var exchanges: [Exchange] = []
    private(set) var queues: [Queue] = []
    private(set) var bindings: [Binding] = []

    var isEmpty: Bool { exchanges.isEmpty && queues.isEmpty && bindings.isEmpty }

    mutating func record(_ exchange: Exchange) {
        if let index = exchanges.firstIndex(where: { $0.name == exchange.name }) {
            exchanges[index] = exchange
        } else {
            exchanges.append(exchange)
        }
    }

    mutating func record(_ queue: Queue) {
        if let index = queues.firstIndex(where: { $0.name == queue.name }) {
            queues[index] = queue
        } else {
            queues.append(queue)
        }
    }

    mutating func record(_ binding: Binding) {
        if !bindings.contains(binding) { bindings.append(binding) }
    }

    mutating func removeBinding(_ binding: Binding) {
        bindings.removeAll { $0 == binding }
    }

    /// Forgets an exchange and every binding from or to it (the broker drops them too).
    mutating func deleteExchange(named name: String) {
        exchanges.removeAll { $0.name == name }
        bindings.removeAll { $0.source == name || ($0.destinationKind == .exchange && $0.destination == name) }
    }

    /// Forgets a queue and every binding to it, and the auto-delete exchanges the broker
    /// deletes with them (those whose last binding went).
    mutating func deleteQueue(named name: String) {
        queues.removeAll { $0.name == name }
        var sources: [String] = []
        bindings.removeAll { binding in
            guard binding.destinationKind == .queue, binding.destination == name else { return false }
            sources.append(binding.source)
            return true
        }
        forgetUnboundAutoDeleteExchanges(sources)
    }

    /// Removes a binding; an auto-delete source exchange left without bindings goes too.
    mutating func unbind(_ binding: Binding) {
        removeBinding(binding)
        forgetUnboundAutoDeleteExchanges([binding.source])
    }

    /// An auto-delete exchange is deleted by the broker when its last binding is removed:
    /// forget each of `candidates` that is one and has no binding left (and so on, for the
    /// exchanges bound to it).
    private mutating func forgetUnboundAutoDeleteExchanges(_ candidates: [String]) {
        var candidates = candidates
        while let name = candidates.popLast() {
            guard let exchange = exchanges.first(where: { $0.name == name }), exchange.autoDelete,
                !bindings.contains(where: { $0.source == name })
            else { continue }
            exchanges.removeAll { $0.name == name }
            bindings.removeAll { binding in
                guard binding.destinationKind == .exchange, binding.destination == name else { return false }
                candidates.append(binding.source)
                return true
            }
        }
    }

    func queue(named name: String) -> Queue? {
        queues.first { $0.name == name }
    }

    /// A server-named queue came back under a new name: bindings follow it.
    mutating func renameQueue(from old: String, to new: String) {
        guard old != new else { return }
        for index in queues.indices where queues[index].name == old { queues[index].name = new }
        for index in bindings.indices where bindings[index].destinationKind == .queue && bindings[index].destination == old {
            bindings[index].destination = new
        }
    }
}
