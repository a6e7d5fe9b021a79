import RabbitMQ

/// What happened to the messages of one `rmq publish`.
struct PublishTally {
    /// Whether the broker confirms (`--confirm` or `--mandatory`).
    var confirming: Bool
    /// Handed to the channel.
    var published = 0
    var acked = 0
    var nacked = 0
    var returned = 0
    /// Confirmations that never came (the channel closed, or a signal's wait ran out).
    var unsettled = 0
    var returnReasons: Set<String> = []
    /// Blank lines of standard input, which are not messages.
    var blankLines = 0

    mutating func record(_ outcome: RabbitMQPublishOutcome) {
        switch outcome {
        case .acked: acked += 1
        case .nacked: nacked += 1
        case .returned(let message):
            returned += 1
            returnReasons.insert("\(message.replyCode) \(message.replyText)")
        }
    }

    mutating func record(_ result: Result<RabbitMQPublishOutcome, any Error>) {
        switch result {
        case .success(let outcome): record(outcome)
        case .failure: unsettled += 1
        }
    }

    /// What was done, for a run that stopped early: "12 published, 11 confirmed".
    var summary: String {
        var parts = ["\(published) published"]
        if confirming {
            parts.append("\(acked) confirmed")
            if nacked > 0 { parts.append("\(nacked) nacked") }
            if returned > 0 { parts.append("\(returned) returned") }
            let waiting = published - acked - nacked - returned
            if waiting > 0 { parts.append("\(waiting) not confirmed") }
        }
        if blankLines > 0 { parts.append("\(blankLines) blank lines skipped") }
        return parts.joined(separator: ", ")
    }

    /// The line for standard error when some message was not confirmed, else nil.
    var failureSummary: String? {
        guard nacked + returned + unsettled > 0 else { return nil }
        var parts: [String] = []
        if returned > 0 { parts.append("\(returned) returned (\(returnReasons.sorted().joined(separator: ", ")))") }
        if nacked > 0 { parts.append("\(nacked) nacked") }
        if unsettled > 0 { parts.append("\(unsettled) unanswered") }
        return "\(nacked + returned + unsettled) of \(published) messages not confirmed: \(parts.joined(separator: ", "))"
    }
}
