import RabbitMQ

/// What happened to the messages of one `rmq publish`.
struct PublishTally {
    var published = 0
    var acked = 0
    var nacked = 0
    var returned = 0
    var returnReasons: Set<String> = []

    mutating func record(_ outcome: RabbitMQPublishOutcome) {
        published += 1
        switch outcome {
        case .acked: acked += 1
        case .nacked: nacked += 1
        case .returned(let message):
            returned += 1
            returnReasons.insert("\(message.replyCode) \(message.replyText)")
        }
    }

    /// The line for standard error when some message was not confirmed, else nil.
    var failureSummary: String? {
        guard nacked + returned > 0 else { return nil }
        var parts: [String] = []
        if returned > 0 { parts.append("\(returned) returned (\(returnReasons.sorted().joined(separator: ", ")))") }
        if nacked > 0 { parts.append("\(nacked) nacked") }
        return "\(nacked + returned) of \(published) messages not confirmed: \(parts.joined(separator: ", "))"
    }
}
