/// A publish on a confirm-mode channel that awaits the broker's ack or nack.
struct Unconfirmed {
    /// Resolved with the outcome; nil for a plain `publish` on a confirm-mode channel.
    var ticket: ConfirmTicket?
    /// Kept to publish it again after a recovery (unless that is switched off), and for a
    /// mandatory one to hand its `basic.return` back.
    var message: OutboundMessage?
    /// The broker returned it (mandatory, unroutable); its ack follows.
    var returned: RabbitMQReturnedMessage?
    /// It holds a slot of its channel's confirm window (publishes that raced `confirmSelect`
    /// were admitted without one and must not give one back).
    var holdsSlot: Bool

    /// The header a mandatory publish on a confirm-mode channel carries, with its sequence
    /// number, so that its `basic.return` (which has no sequence number) finds it exactly.
    /// Removed again from the returned message handed to the application.
    static let returnTagHeader = "x-swift-rabbitmq-publish-seq"
}

/// Publishes awaiting their confirms, by sequence number. Sequence numbers are consecutive,
/// so this is an array indexed from the oldest one still pending: no hashing, and the slots
/// are reused as the window moves.
struct UnconfirmedWindow {
    typealias Entry = Unconfirmed

    private var slots: [Entry?] = []
    /// Index in `slots` of the oldest sequence number kept.
    private var head = 0
    /// The sequence number of `slots[head]`.
    private(set) var oldest: UInt64 = 1
    /// Entries still pending (a confirm can remove entries in the middle).
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Adds the entry of the next sequence number (the one after every entry added so far).
    mutating func append(_ entry: Entry) {
        slots.append(entry)
        count += 1
    }

    /// The sequence number the next `append` stands for.
    var next: UInt64 { oldest + UInt64(slots.count - head) }

    subscript(sequence: UInt64) -> Entry? {
        get {
            guard sequence >= oldest, sequence < next else { return nil }
            return slots[head + Int(sequence - oldest)]
        }
        set {
            guard sequence >= oldest, sequence < next else { return }
            let index = head + Int(sequence - oldest)
            if slots[index] == nil, newValue != nil { count += 1 }
            if slots[index] != nil, newValue == nil { count -= 1 }
            slots[index] = newValue
        }
    }

    /// Removes the entries from `first` through `last`, oldest first, handing each to `body`.
    mutating func remove(from first: UInt64, through last: UInt64, _ body: (consuming Entry) -> Void) {
        let low = max(first, oldest)
        let high = min(last, next &- 1)
        if low <= high {
            for index in (head + Int(low - oldest))...(head + Int(high - oldest)) {
                var taken: Entry? = nil
                swap(&taken, &slots[index])  // moved out, not copied
                guard let entry = taken else { continue }
                count -= 1
                body(entry)
            }
        }
        // Move past the confirmed front; drop the dead prefix once it is large.
        while head < slots.count, slots[head] == nil {
            head += 1
            oldest += 1
        }
        if head == slots.count {
            slots.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024, head * 2 >= slots.count {
            slots.removeFirst(head)
            head = 0
        }
    }

    /// Takes back the entry added last (its publish never left).
    mutating func dropLast() -> Entry? {
        guard slots.count > head, let entry = slots.removeLast() else { return nil }
        count -= 1
        return entry
    }

    /// Everything still pending, oldest first; the window starts again at sequence number 1
    /// (as the broker's numbering does on a new channel).
    mutating func takeAll() -> [Entry] {
        let entries = slots[head...].compactMap { $0 }
        self = UnconfirmedWindow()
        return entries
    }
}
