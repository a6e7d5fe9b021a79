/// How many deliveries each acknowledgement settles, for the consumer counters of
/// ``RabbitMQMetrics``: one, or with `multiple` every delivery up to its tag that was not
/// settled before.
///
/// Delivery tags of a channel count up from 1 on each connection (so a recovery starts a
/// new tally). What is settled is kept as a watermark (every tag up to it) and the few tags
/// settled singly above it, so acknowledging in order costs two comparisons and no memory.
/// Deliveries that need no settling (auto-ack consumers, `basic.get` without ack) leave gaps
/// under a later `multiple` acknowledgement, which counts them: after
/// ``maxSettledAbove`` single settlements above a gap, the tally gives up on the gap.
struct SettlementTally: Sendable {
    /// Bounds the memory of a channel whose gaps never close.
    static let maxSettledAbove = 1024

    private(set) var epoch: UInt64 = 0
    /// Every tag up to this one is settled.
    private(set) var settledThrough: UInt64 = 0
    /// Tags above ``settledThrough`` settled singly, ascending.
    private(set) var settledAbove: [UInt64] = []

    /// Records a settlement; returns how many deliveries it settled that were not settled
    /// before (0 for a tag settled twice, which the broker answers with a channel error).
    mutating func settle(tag: UInt64, multiple: Bool, epoch: UInt64) -> Int {
        if epoch != self.epoch {
            self = SettlementTally()
            self.epoch = epoch
        }
        guard tag > settledThrough else { return 0 }
        if multiple {
            var alreadySettled = 0
            while alreadySettled < settledAbove.count, settledAbove[alreadySettled] <= tag { alreadySettled += 1 }
            settledAbove.removeFirst(alreadySettled)
            let count = Int(tag - settledThrough) - alreadySettled
            settledThrough = tag
            advance()
            return count
        }
        if tag == settledThrough + 1 {
            settledThrough = tag
            if !settledAbove.isEmpty { advance() }
            return 1
        }
        // Out of order: keep it, ascending (usually at the end).
        var index = settledAbove.endIndex
        while index > settledAbove.startIndex, settledAbove[index - 1] >= tag { index -= 1 }
        if index < settledAbove.endIndex, settledAbove[index] == tag { return 0 }
        settledAbove.insert(tag, at: index)
        if settledAbove.count > Self.maxSettledAbove {
            // A gap that does not close (deliveries that need no settling): count it as settled.
            settledThrough = settledAbove.removeFirst()
            advance()
        }
        return 1
    }

    private mutating func advance() {
        var consumed = 0
        while consumed < settledAbove.count, settledAbove[consumed] == settledThrough + 1 {
            settledThrough += 1
            consumed += 1
        }
        settledAbove.removeFirst(consumed)
    }
}
