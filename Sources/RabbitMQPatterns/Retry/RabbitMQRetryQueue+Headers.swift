extension RabbitMQRetryQueue {
    /// Header with how many times the message has been scheduled for a retry (an integer; absent
    /// on the first attempt). Our own counter: the broker's `x-death` counts changed meaning
    /// across broker versions and are not used.
    public static let retryCountHeader = "x-retry-count"
    /// Header with the text of the most recent failure.
    public static let lastErrorHeader = "x-last-error"
    /// Header with when the first attempt failed, ISO-8601 UTC with milliseconds.
    public static let firstFailureAtHeader = "x-first-failure-at"
    /// Header, on parked messages only, saying why: `retries-exhausted`, `invalid-envelope` or
    /// `permanent-failure`.
    public static let deadLetterReasonHeader = "x-dead-letter-reason"
    /// Header with how many times the message was replayed from the dead-letter queue into the
    /// work queue (an integer; absent until the first replay). See ``RabbitMQRetryQueue`` on replays.
    public static let replayCountHeader = "x-replay-count"
    /// Header with the retries of the message's earlier ladders, summed over its replays (an
    /// integer; absent until the first replay): a replay resets ``retryCountHeader`` and keeps
    /// the old count here.
    public static let previousRetryCountHeader = "x-previous-retry-count"
}
